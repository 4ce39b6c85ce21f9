"""The Catalog: reads and writes of one bundle's SQLite file, the source of truth of an index.

Each image row has a stable id (AUTOINCREMENT: ids are never reused, so a stale ANN
index can never point a removed id at a new image). Vectors live in their own table,
written in the same transaction as their row. Batches of indexed files are written, and
read back by caches, through the change log of :mod:`.changes`.

Opening a catalog upgrades its schema if an older release wrote it (:mod:`.migrations`);
see :mod:`.connection` for how it is opened (by path, read-only when it must be) and
:mod:`.metadata` for what user metadata may hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ReadOnlyIndexError, RetrievalError
from . import migrations
from .changes import Changes, FileRecord, generation, read_changes, write_batch
from .connection import MODE_WRITE, choose_mode, immediate, sqlite_engine, translate_errors
from .metadata import TAGS_KEY, check_metadata, check_tags
from .models import STATUS_FAILED, STATUS_OK, Exclusion, ImageRow, LocalFeatureRow, VectorRow, has_status
from .settings import Settings

__all__ = ["Catalog"]


class Catalog(Settings):
    """Access to one bundle's SQLite file. Safe to open from several processes.

    Args:
        create: make the catalog file if it does not exist yet.
        read_only: open without ever writing (``mode=ro``); None decides from whether
            the folder and file are writable. Writes then raise ReadOnlyIndexError.

    Raises:
        RetrievalError: no catalog at `path` (and not `create`), or not a catalog.
        IndexTooNewError: a newer retrieve wrote it.
        ReadOnlyIndexError: it needs a schema upgrade but cannot be written.
    """

    def __init__(self, path: str | Path, create: bool = False, read_only: bool | None = None) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise RetrievalError(f"no catalog at {self.path}")
        mode = choose_mode(self.path, read_only, create)
        self.read_only = mode != MODE_WRITE
        self.engine = sqlite_engine(self.path, mode)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._shared = threading.local()  # the session of this thread's open snapshot(), if any
        self._last_write: Changes | None = None  # what this object's last apply() committed
        self._writes = sessionmaker(immediate(self.engine), expire_on_commit=False)
        try:
            self._upgrade()
        except BaseException:
            self.engine.dispose()
            raise

    def _upgrade(self) -> None:
        """Check the schema revision; migrate to this release's if it is older.

        An empty database gets the whole schema, whether or not `create` was asked: it
        is a new catalog, or one whose creation stopped before its first commit.
        """
        bundle = self.path.parent
        with translate_errors(self.path), self.engine.begin() as conn:
            revision = migrations.current(conn, self.path)
        migrations.check_known(revision, bundle)
        if revision == migrations.head():
            return
        if self.read_only:
            found = f"schema {revision}" if revision else "no tables (its creation was interrupted)"
            raise ReadOnlyIndexError(
                f"index at {bundle} has {found} and this retrieve needs schema {migrations.head()}, "
                "but it is read-only so it cannot be upgraded in place; open it once with write access "
                "(or copy it somewhere writable)"
            )
        with translate_errors(self.path):
            migrations.upgrade(immediate(self.engine), self.path, bundle)

    def revision(self) -> str | None:
        """The schema revision stored in the catalog (the newest, once opened for writing)."""
        with self._read() as s:
            return migrations.current(s.connection(), self.path)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside shares one session and one read transaction.

        A search makes several lookups (the index's catch-up, candidate vectors, rows,
        filters): inside a snapshot they see one consistent state of the catalog, even
        while another process writes, and cost one transaction instead of one each.
        Snapshots nest (the inner one joins the outer); each thread has its own.
        """
        if getattr(self._shared, "session", None) is not None:
            yield
            return
        with translate_errors(self.path), self.sessions() as s, s.begin():
            self._shared.session = s
            try:
                yield
            finally:
                self._shared.session = None

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        """A session reading one snapshot: this thread's open :meth:`snapshot`, or its own."""
        shared = getattr(self._shared, "session", None)
        if shared is not None:
            yield shared
            return
        with translate_errors(self.path), self.sessions() as s:
            yield s

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction that holds the write lock from its first statement.

        Raises:
            ReadOnlyIndexError: the catalog was opened read-only.
            DiskFullError, IndexBusyError: see :func:`.connection.translate_errors`.
        """
        if self.read_only:
            raise ReadOnlyIndexError(f"index at {self.path.parent} is open read-only; "
                                     "open it with write access to change it")
        with translate_errors(self.path), self._writes.begin() as s:
            yield s

    def generation(self) -> int:
        return int(self.get_setting("generation") or 0)

    # ------------------------------------------------------------------ reads

    def rows_under(self, roots: Sequence[str]) -> dict[str, ImageRow]:
        """All rows whose path is one of `roots` or lies below one of them."""
        out: dict[str, ImageRow] = {}
        with self._read() as s:
            for root in roots:
                prefix = root.rstrip("/") + "/"
                q = select(ImageRow).where(
                    (ImageRow.path == root) | (func.substr(ImageRow.path, 1, len(prefix)) == prefix)
                )
                out.update({r.path: r for r in s.scalars(q)})
        return out

    def _in_chunks(self, query: Callable[[list[Any]], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Run `query(chunk)` over `values` in chunks (SQLite caps bound parameters)."""
        values = list(values)
        with self._read() as s:
            for i in range(0, len(values), 500):
                yield from s.scalars(query(values[i:i + 500]))

    def rows_by_path(self, paths: Iterable[str]) -> dict[str, ImageRow]:
        return {r.path: r for r in self._in_chunks(lambda c: select(ImageRow).where(ImageRow.path.in_(c)), paths)}

    def resolve_ids(self, ids_or_paths: Iterable[int | str | os.PathLike[str]], strict: bool) -> set[int]:
        """Ids of the images named by id or by path (relative paths from the current folder).

        Raises:
            RetrievalError: with `strict`, one of them is not in the catalog.
        """
        ids: list[int] = []
        paths: dict[str, str | os.PathLike[str]] = {}  # absolute path -> as given
        for item in ids_or_paths:
            if isinstance(item, (int, np.integer)):
                ids.append(int(item))
            else:
                paths[os.path.abspath(item)] = item
        found = set(self.rows_by_id(ids))
        by_path = self.rows_by_path(paths)
        if strict:
            missing = [i for i in ids if i not in found] + [given for p, given in paths.items() if p not in by_path]
            if missing:
                raise RetrievalError(f"not in the index: {missing[0]}")
        return found | {r.id for r in by_path.values()}

    def rows_by_id(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        ids = (int(i) for i in ids)
        return {r.id: r for r in self._in_chunks(lambda c: select(ImageRow).where(ImageRow.id.in_(c)), ids)}

    def vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors by id; ids without one (failed, removed) are absent."""
        ids = (int(i) for i in ids)
        rows = self._in_chunks(lambda c: select(VectorRow).where(VectorRow.image_id.in_(c)), ids)
        return {v.image_id: np.frombuffer(v.data, np.float32) for v in rows}

    def local_features(self, ids: Iterable[int]) -> dict[int, bytes]:
        """Stored local features (their bytes) by id; ids without them are absent."""
        ids = (int(i) for i in ids)
        rows = self._in_chunks(lambda c: select(LocalFeatureRow).where(LocalFeatureRow.image_id.in_(c)), ids)
        return {r.image_id: r.data for r in rows}

    def ok_ids_with_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """For each content hash, one ok image that has it (to reuse its vector)."""
        hashes = list(set(hashes))
        out: dict[str, int] = {}
        with self._read() as s:
            for i in range(0, len(hashes), 500):
                q = select(ImageRow.content_hash, func.min(ImageRow.id)).where(
                    ImageRow.content_hash.in_(hashes[i:i + 500]), has_status(STATUS_OK)
                ).group_by(ImageRow.content_hash)
                out.update(dict(s.execute(q).all()))
        return out

    def ids_matching(self, conditions: Sequence[Any]) -> np.ndarray:
        """Ids of ok images meeting all SQL conditions (see :class:`retrieval.filters.Filter`)."""
        q = select(ImageRow.id).where(has_status(STATUS_OK), *conditions)
        with self._read() as s:
            return np.fromiter(s.scalars(q), np.int64)

    def update_tags(self, ids: Sequence[int], add: Sequence[str], remove: Sequence[str]) -> int:
        """Add and remove tags (kept sorted in metadata["tags"]); returns rows changed."""
        add, remove = check_tags(add), check_tags(remove)
        changed = 0
        with self._write() as s:
            for row in s.scalars(select(ImageRow).where(ImageRow.id.in_([int(i) for i in ids]))):
                tags = (set(row.meta.get(TAGS_KEY, [])) | set(add)) - set(remove)
                meta = dict(row.meta)
                meta[TAGS_KEY] = sorted(tags)
                if meta != row.meta:
                    row.meta = meta
                    changed += 1
        return changed

    def hash_groups(self, min_size: int = 2) -> Iterator[list[tuple[int, str]]]:
        """Groups of ok images sharing a content hash, streamed group by group."""
        with self._read() as s:
            dup = (select(ImageRow.content_hash).where(has_status(STATUS_OK))
                   .group_by(ImageRow.content_hash).having(func.count() >= min_size).subquery())
            q = (select(ImageRow.content_hash, ImageRow.id, ImageRow.path)
                 .where(has_status(STATUS_OK), ImageRow.content_hash.in_(select(dup)))
                 .order_by(ImageRow.content_hash, ImageRow.id))
            group: list[tuple[int, str]] = []
            current = None
            for h, i, p in s.execute(q):
                if h != current and group:
                    yield group
                    group = []
                current = h
                group.append((i, p))
            if group:
                yield group

    def counts(self) -> dict[str, int]:
        """Images by status. One count per status, so each reads its partial index only."""
        with self._read() as s:
            return {status: s.scalar(select(func.count()).where(has_status(status))) or 0
                    for status in (STATUS_OK, STATUS_FAILED)}

    def failed(self, limit: int | None = None) -> list[ImageRow]:
        with self._read() as s:
            q = select(ImageRow).where(has_status(STATUS_FAILED)).order_by(ImageRow.path)
            return list(s.scalars(q.limit(limit) if limit else q))

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All ok vectors in id order, in (ids, matrix) blocks."""
        last = 0
        while True:
            with self._read() as s:
                q = (select(VectorRow.image_id, VectorRow.data)
                     .where(VectorRow.image_id > last).order_by(VectorRow.image_id).limit(batch))
                rows = s.execute(q).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            yield ids, np.stack([np.frombuffer(r[1], np.float32) for r in rows])
            last = int(ids[-1])

    def iter_local_features(self, batch: int = 2_000) -> Iterator[list[tuple[int, bytes]]]:
        """All stored local features in id order, in blocks of (id, bytes)."""
        last = 0
        while True:
            with self._read() as s:
                rows = s.execute(select(LocalFeatureRow.image_id, LocalFeatureRow.data)
                                 .where(LocalFeatureRow.image_id > last)
                                 .order_by(LocalFeatureRow.image_id).limit(batch)).all()
            if not rows:
                return
            yield [(int(r[0]), bytes(r[1])) for r in rows]
            last = int(rows[-1][0])

    def changes_since(self, gen: int) -> Changes:
        """Everything an index at generation `gen` must apply to be current.

        Read in one transaction, so the result is a consistent snapshot even while
        another process writes. The batch this object wrote last comes from memory when it
        is exactly what `gen` lacks (no other commit before or after it): the writer
        thread's catch-up after each batch then does not read back the vectors it has just
        written (~60 us a row on a GPU machine, in the serial part of indexing).
        """
        with self._read() as s, (contextlib.nullcontext() if s.in_transaction() else s.begin()):
            last = self._last_write
            if last is not None and last.generation == gen + 1 and generation(s) == last.generation:
                return last
            return read_changes(s, gen)

    # ------------------------------------------------------------------ writes

    def apply(self, records: Sequence[FileRecord] = (), removals: Sequence[int] = (),
              touches: Sequence[tuple[int, int]] = ()) -> list[int]:
        """Write one batch atomically: upserts, removals, and mtime-only refreshes.

        Returns the ids of `records`, in order. Rows and their vectors commit together
        or not at all; the generation moves forward by one.
        """
        checked = [dataclasses.replace(r, metadata=check_metadata(r.metadata)) if r.metadata is not None else r
                   for r in records]
        with self._write() as s:
            ids, changes = write_batch(s, checked, removals, touches)
        self._last_write = changes  # committed
        return ids

    def set_metadata(self, image_id: int, metadata: dict[str, Any]) -> None:
        """Replace one image's metadata.

        Raises:
            BadMetadataError: see :func:`.metadata.check_metadata`.
            RetrievalError: no image with that id.
        """
        metadata = check_metadata(metadata)
        with self._write() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise RetrievalError(f"no image with id {image_id}")
            row.meta = metadata

    def merge_metadata(self, updates: Mapping[int, Mapping[str, Any]], unset: Sequence[str] = ()) -> None:
        """Set keys of many images' metadata (others kept) and drop the `unset` keys, in one
        transaction: all or nothing.

        Raises:
            BadMetadataError: a result :func:`.metadata.check_metadata` refuses.
            RetrievalError: an id that is not in the catalog (nothing is written).
        """
        with self._write() as s:
            ids = [int(i) for i in updates]
            rows = {r.id: r for n in range(0, len(ids), 500)  # SQLite caps bound parameters
                    for r in s.scalars(select(ImageRow).where(ImageRow.id.in_(ids[n:n + 500])))}
            if missing := [i for i in updates if int(i) not in rows]:
                raise RetrievalError(f"not in the index: {missing[0]}")
            for image_id, values in updates.items():
                row = rows[int(image_id)]
                merged = {k: v for k, v in {**row.meta, **values}.items() if k not in unset}
                row.meta = check_metadata(merged)

    # ------------------------------------------------------------------ exclusions

    def exclusions(self) -> list[str]:
        """The path patterns indexing leaves out (:mod:`retrieval.indexing.exclusions`)."""
        with self._read() as s:
            return list(s.scalars(select(Exclusion.pattern).order_by(Exclusion.pattern)))

    def change_exclusions(self, add: Iterable[str] = (), drop: Iterable[str] = ()) -> list[str]:
        """Record patterns to leave out and forget others; returns those of `drop` that were recorded."""
        now = time.time()
        with self._write() as s:
            for pattern in add:
                s.merge(Exclusion(pattern=pattern, added_at=now))
            dropped = [p for p in dict.fromkeys(drop) if s.get(Exclusion, p) is not None]
            s.execute(delete(Exclusion).where(Exclusion.pattern.in_(dropped)))
            return dropped


    # ------------------------------------------------------------------ listing (front ends)

    def ok_rows_page(self, conditions: Sequence[Any], after: int, limit: int) -> list[ImageRow]:
        """Up to `limit` ok rows meeting all SQL conditions with ids above `after`, in id
        order: keyset paging, so a page stays right while images are added or removed
        (an offset would shift under every removal)."""
        q = (select(ImageRow).where(has_status(STATUS_OK), ImageRow.id > after, *conditions)
             .order_by(ImageRow.id).limit(limit))
        with self._read() as s:
            return list(s.scalars(q))

    def count_matching(self, conditions: Sequence[Any]) -> int:
        """How many ok images meet all SQL conditions."""
        with self._read() as s:
            return s.scalar(select(func.count()).where(has_status(STATUS_OK), *conditions)) or 0
