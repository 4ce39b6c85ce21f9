"""The catalog's change log: batches of file records written under a new generation, and
read back as the changes a cache must replay.

Each batch (:meth:`Catalog.apply`) bumps the *generation* counter and stamps the rows it
touched; a removal leaves a tombstone with the generation. An ANN index saved at
generation g can therefore catch up by replaying only what changed after g
(:func:`read_changes`), in any process. Metadata and tags are not in the log: no cache
holds them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from sqlalchemy import JSON, Table, bindparam, case, delete, func, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from .facts import PhotoFacts
from .models import STATUS_OK, Base, ImageRow, LocalFeatureRow, Setting, Tombstone, VectorRow

__all__ = ["Changes", "FileRecord", "generation", "read_changes", "write_batch"]

_META = JSON(none_as_null=True)  # a None metadata binds as SQL NULL: COALESCE keeps the stored one
_FILE = ("path", "content_hash", "size", "mtime_ns", "status", "error")  # FileRecord fields every write sets
_FACTS = tuple(f.name for f in dataclasses.fields(PhotoFacts))
_KEPT_BY_A_MOVE = ("width", "height", "format", *_FACTS)  # describe the content, which a move keeps
_NO_FACTS = PhotoFacts()
_IN_CHUNK = 10_000  # ids per DELETE ... IN (...): SQLite allows 32,766 bound parameters


@dataclass
class FileRecord:
    """What the indexer learnt about one file, ready to be written.

    `vector` None on an ok record with an `id` keeps the stored vector (a move), and
    its local features with it. `local`: the image's local features (bytes of
    :class:`retrieval.local.LocalFeatures`) in an index that keeps them, else None; a
    new vector without them drops any stored ones, which described the old content.
    `metadata` None keeps the stored metadata. `photo`: what the file's EXIF says, written
    with the new content (a move keeps the stored facts, as it keeps the vector).
    """

    path: str
    content_hash: str
    size: int
    mtime_ns: int
    status: str = STATUS_OK
    error: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    vector: np.ndarray | None = None
    metadata: dict[str, Any] | None = None
    id: int | None = None
    local: bytes | None = None
    photo: PhotoFacts | None = None


@dataclass
class Changes:
    """What happened after a generation: vectors to (re)insert and ids to drop."""

    generation: int
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    vectors: np.ndarray | None = None
    removed: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def write_batch(s: Session, records: Sequence[FileRecord], removals: Sequence[int],
                touches: Sequence[tuple[int, int]]) -> tuple[list[int], Changes]:
    """Write one batch in the write transaction `s`, under the next generation.

    `records` hold checked metadata (see :func:`.metadata.check_metadata`). Returns
    their ids, in order, and what the batch changed for a vector index: what
    :func:`read_changes` would read back for this generation alone, from the vectors in hand
    (a move keeps its id and vector, so it changes nothing there).

    Why Core statements, each run once over the whole batch (executemany), rather than ORM
    objects flushed one by one: the writer runs in one thread beside the model, and a GPU
    embeds thousands of images a second; an ORM round trip per row (get, flush, merge's
    select, delete) cost ~0.8 ms a row and held the GIL the model's thread needs. Rows that
    change an existing id are written before new rows, in the order given, so a path that a
    move frees can be taken by a new file in the same batch.
    """
    now = time.time()
    gen = generation(s) + 1
    s.execute(update(Setting).where(Setting.key == "generation").values(value=str(gen)))
    claimed = [r.id for r in records if r.id is not None]
    present = {i for part in _chunks(claimed) for i in s.scalars(select(ImageRow.id).where(ImageRow.id.in_(part)))}
    ids: list[int | None] = [r.id if r.id in present else None for r in records]
    _update_rows(s, [(i, r) for i, r in zip(ids, records) if i is not None], gen, now)
    fresh = [n for n, i in enumerate(ids) if i is None]
    if fresh:
        rows = [{**_columns(records[n], gen, now), "added_at": now, "meta": records[n].metadata or {}}
                for n in fresh]
        s.execute(insert(_table(ImageRow)), rows)
        paths = [records[n].path for n in fresh]  # unique: the new rows' ids, found by path
        found = {path: image_id for part in _chunks(paths)
                 for path, image_id in s.execute(select(ImageRow.path, ImageRow.id).where(ImageRow.path.in_(part)))}
        for n, path in zip(fresh, paths):
            ids[n] = found[path]
    done = [int(i) for i in ids if i is not None]
    failed = [i for i, r in zip(done, records) if r.status != STATUS_OK]
    embedded = [(i, r) for i, r in zip(done, records) if r.status == STATUS_OK and r.vector is not None]
    _delete_ids(s, VectorRow, failed)
    _delete_ids(s, LocalFeatureRow, failed + [i for i, r in embedded if r.local is None])
    _upsert(s, VectorRow, [{"image_id": i, "data": np.ascontiguousarray(r.vector, np.float32).tobytes()}
                           for i, r in embedded])
    _upsert(s, LocalFeatureRow, [{"image_id": i, "data": r.local} for i, r in embedded if r.local is not None])
    if removals:
        rm = [int(i) for i in removals]
        for table in (VectorRow, LocalFeatureRow, ImageRow):
            _delete_ids(s, table, rm)
        _upsert(s, Tombstone, [{"image_id": i, "gen": gen} for i in rm], "gen")
    if touches:
        table = _table(ImageRow)
        s.execute(update(table).where(table.c.id == bindparam("_id")).values(mtime_ns=bindparam("_mtime")),
                  [{"_id": i, "_mtime": m} for i, m in touches])
    vectors = np.stack([np.asarray(r.vector, np.float32) for _, r in embedded]) if embedded else None
    changes = Changes(gen, ids=np.array([i for i, _ in embedded], np.int64), vectors=vectors,
                      removed=np.array(failed + [int(i) for i in removals], np.int64))
    return done, changes


def _table(model: type[Base]) -> Table:
    """A mapped class's table (declarative classes map to a Table; the stubs say FromClause)."""
    return cast(Table, model.__table__)


def _columns(rec: FileRecord, gen: int, now: float) -> dict[str, Any]:
    """The images-table columns a record gives, under generation `gen` (metadata apart)."""
    facts = rec.photo or _NO_FACTS
    return {**{name: getattr(rec, name) for name in (*_FILE, "width", "height", "format")},
            **{name: getattr(facts, name) for name in _FACTS}, "gen": gen, "updated_at": now}


def _update_rows(s: Session, rows: Sequence[tuple[int, FileRecord]], gen: int, now: float) -> None:
    """UPDATE existing rows, in order, in one executemany. Each statement names every
    column; a record's own choices ride in its parameters: metadata None (SQL NULL through
    `_META`) keeps the stored metadata, and a move (`_content` false) keeps the stored
    dimensions and EXIF facts."""
    if not rows:
        return
    table = _table(ImageRow)
    values: dict[str, Any] = {k: bindparam(k) for k in (*_FILE, "gen", "updated_at")}
    values.update({k: case((bindparam("_content"), bindparam(k, type_=table.c[k].type)), else_=table.c[k])
                   for k in _KEPT_BY_A_MOVE})
    values["meta"] = func.coalesce(bindparam("meta", type_=_META), table.c.meta)
    params = []
    for image_id, rec in rows:
        content = not (rec.status == STATUS_OK and rec.vector is None)
        params.append({"_id": image_id, "_content": content, "meta": rec.metadata,
                       **_columns(rec, gen, now)})
    s.execute(update(table).where(table.c.id == bindparam("_id")).values(values), params)


def _delete_ids(s: Session, model: type[Base], ids: Sequence[int]) -> None:
    """DELETE the rows of `model` whose key is in `ids`."""
    key = _table(model).primary_key.columns.values()[0]
    for part in _chunks(ids):
        s.execute(delete(_table(model)).where(key.in_(part)))


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """`values` in slices that fit one ``IN (...)`` under SQLite's limit on bound parameters."""
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start:start + _IN_CHUNK]


def _upsert(s: Session, model: type[Base], rows: Sequence[dict[str, Any]], column: str = "data") -> None:
    """INSERT rows of `model`, replacing `column` of a row whose key exists (one executemany)."""
    if rows:
        stmt = sqlite_insert(_table(model))
        s.execute(stmt.on_conflict_do_update(index_elements=[k.name for k in _table(model).primary_key],
                                             set_={column: stmt.excluded[column]}), list(rows))


def generation(s: Session) -> int:
    """The catalog's generation as the transaction `s` sees it."""
    return int(s.scalars(select(Setting.value).where(Setting.key == "generation")).one())


def read_changes(s: Session, gen: int) -> Changes:
    """Everything an index at generation `gen` must apply to be current, read in the
    transaction `s` (so one consistent state, even while another process writes)."""
    now = generation(s)
    if now == gen:
        return Changes(now)
    rows = s.execute(
        select(ImageRow.id, ImageRow.status, VectorRow.data)
        .outerjoin(VectorRow, VectorRow.image_id == ImageRow.id)
        .where(ImageRow.gen > gen).order_by(ImageRow.id)
    ).all()
    dropped = s.scalars(select(Tombstone.image_id).where(Tombstone.gen > gen)).all()
    ok = [(r[0], r[2]) for r in rows if r[1] == STATUS_OK and r[2] is not None]
    stale = [r[0] for r in rows if r[1] != STATUS_OK or r[2] is None]
    return Changes(
        generation=now,
        ids=np.array([i for i, _ in ok], np.int64),
        vectors=np.stack([np.frombuffer(d, np.float32) for _, d in ok]) if ok else None,
        removed=np.array(list(dropped) + stale, np.int64),
    )
