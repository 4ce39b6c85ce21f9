"""The catalog's change log: batches of file records written under a new generation, and
read back as the changes a cache must replay.

Each batch (:meth:`Catalog.apply`) bumps the *generation* counter and stamps the rows it
touched; a removal leaves a tombstone with the generation. An ANN index saved at
generation g can therefore catch up by replaying only what changed after g
(:func:`read_changes`), in any process. Metadata and tags are not in the log: no cache
holds them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .facts import PhotoFacts
from .models import STATUS_OK, ImageRow, LocalFeatureRow, Setting, Tombstone, VectorRow

__all__ = ["Changes", "FileRecord", "read_changes", "write_batch"]


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
                touches: Sequence[tuple[int, int]]) -> list[int]:
    """Write one batch in the write transaction `s`, under the next generation.

    `records` hold checked metadata (see :func:`.metadata.check_metadata`). Returns
    their ids, in order.
    """
    now = time.time()
    ids: list[int] = []
    gen_row = s.get_one(Setting, "generation")
    gen = int(gen_row.value) + 1
    gen_row.value = str(gen)
    for rec in records:
        row = s.get(ImageRow, rec.id) if rec.id is not None else None
        if row is None:
            row = ImageRow(path=rec.path, added_at=now, meta=rec.metadata or {})
            s.add(row)
        elif rec.metadata is not None:
            row.meta = rec.metadata
        row.path, row.content_hash, row.size, row.mtime_ns = rec.path, rec.content_hash, rec.size, rec.mtime_ns
        row.status, row.error = rec.status, rec.error
        if rec.status == STATUS_OK and rec.vector is None and row.id is not None:
            pass  # a move: dimensions, EXIF facts and vector stay as they are
        else:
            row.width, row.height, row.format = rec.width, rec.height, rec.format
            (rec.photo or PhotoFacts()).write_to(row)
        row.gen, row.updated_at = gen, now
        s.flush()
        if rec.status != STATUS_OK:
            s.execute(delete(VectorRow).where(VectorRow.image_id == row.id))
            s.execute(delete(LocalFeatureRow).where(LocalFeatureRow.image_id == row.id))
        elif rec.vector is not None:
            s.merge(VectorRow(image_id=row.id, data=np.ascontiguousarray(rec.vector, np.float32).tobytes()))
            if rec.local is not None:
                s.merge(LocalFeatureRow(image_id=row.id, data=rec.local))
            else:
                s.execute(delete(LocalFeatureRow).where(LocalFeatureRow.image_id == row.id))
        ids.append(row.id)
    if removals:
        rm = [int(i) for i in removals]
        s.execute(delete(VectorRow).where(VectorRow.image_id.in_(rm)))
        s.execute(delete(LocalFeatureRow).where(LocalFeatureRow.image_id.in_(rm)))
        s.execute(delete(ImageRow).where(ImageRow.id.in_(rm)))
        for i in rm:
            s.merge(Tombstone(image_id=i, gen=gen))
    for image_id, mtime_ns in touches:
        s.execute(update(ImageRow).where(ImageRow.id == image_id).values(mtime_ns=mtime_ns))
    return ids


def read_changes(s: Session, gen: int) -> Changes:
    """Everything an index at generation `gen` must apply to be current, read in the
    transaction `s` (so one consistent state, even while another process writes)."""
    now = int(s.get_one(Setting, "generation").value)
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
