"""The Parquet shards a Ray job writes, one row per file it read, and the staging folder
inside the bundle that holds them until they are loaded.

A row says what :class:`~retrieval.images.batches.Decoded` says (the hash and stat of the
bytes read, dimensions, format, EXIF facts, or why the file failed) and carries the vector:
everything the catalog stores, so the loader needs no Ray and reads no image. Each job
writes into a folder of its own; a shard cut short by a kill has no Parquet footer, does
not open, and is deleted, its files being embedded again.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..catalog import STATUS_FAILED, STATUS_OK
from ..catalog.facts import PhotoFacts
from ..images.batches import Decoded

__all__ = ["SCHEMA", "STAGING", "ShardRow", "Staging", "record_of", "shard_table", "shard_vectors"]

log = logging.getLogger(__name__)

STAGING = "ray-staging"
"""The bundle's folder for a Ray job's shards, gone once they are loaded."""

_FACTS = tuple(f.name for f in fields(PhotoFacts))


def _fact_type(annotation: object) -> pa.DataType:
    """A PhotoFacts field's column type, from its annotation ("str | None", ...)."""
    text = str(annotation)
    return pa.string() if "str" in text else pa.float64() if "float" in text else pa.int64()


SCHEMA = pa.schema([
    ("path", pa.string()), ("status", pa.string()), ("error", pa.string()), ("content_hash", pa.string()),
    ("size", pa.int64()), ("mtime_ns", pa.int64()), ("width", pa.int64()), ("height", pa.int64()),
    ("format", pa.string()), *((f.name, _fact_type(f.type)) for f in fields(PhotoFacts)),
    ("vector", pa.list_(pa.float32())),
])
"""One row per file a job read: `vector` null where `status` is failed."""


def record_of(path: str, d: Decoded) -> dict[str, Any]:
    """A decoded file's row, less its vector (which the embed actor adds)."""
    facts = d.photo.to_dict() if d.photo is not None else dict.fromkeys(_FACTS)
    return {"path": path, "status": STATUS_FAILED if d.error is not None else STATUS_OK, "error": d.error,
            "content_hash": d.content_hash, "size": d.size, "mtime_ns": d.mtime_ns,
            "width": d.width, "height": d.height, "format": d.format, **facts}


def shard_vectors(shard: str, rows: np.ndarray) -> np.ndarray:
    """The vectors of these rows of a shard, as one matrix.

    Raises:
        ValueError: one of the rows is a failed file's, which has no vector.
    """
    column = pq.read_table(shard, columns=["vector"]).column("vector").take(pa.array(rows, pa.int64()))
    if column.null_count:
        raise ValueError(f"{column.null_count} of the {len(rows)} rows asked of {shard} have no vector")
    flat = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(rows), -1)


def shard_table(records: Sequence[dict[str, Any]], vectors: np.ndarray) -> pa.Table:
    """Rows for `records`, the ok ones taking `vectors` in order (failed ones a null vector).

    The vector column is built from one flat float32 buffer, not from Python lists: a
    batch of 32 1,280-d vectors would otherwise be 40,000 Python floats.
    """
    ok = np.array([r["status"] == STATUS_OK for r in records], bool)
    dim = vectors.shape[1] if len(vectors) else 0
    offsets = np.concatenate([[0], np.cumsum(np.where(ok, dim, 0))]).astype(np.int32)
    vector = pa.ListArray.from_arrays(pa.array(offsets, mask=np.concatenate([~ok, [False]])),
                                      pa.array(np.ascontiguousarray(vectors, np.float32).ravel()))
    rest = pa.Table.from_pylist(list(records), schema=SCHEMA.remove(SCHEMA.get_field_index("vector")))
    return rest.append_column(SCHEMA.field("vector"), vector)


@dataclass(frozen=True)
class ShardRow:
    """One row read back: the file's facts as the indexer's :class:`Decoded`, its vector,
    and where it lies (`shard` file, `row` number in it), for a task to read the vector again."""

    path: str
    facts: dict[str, Any]
    vector: np.ndarray | None
    shard: str
    row: int

    def decoded(self, index: int) -> Decoded:
        """The row as the local loop's Decoded for position `index` of the plan's embed list."""
        f = self.facts
        photo = PhotoFacts(**{name: f[name] for name in _FACTS}) if f["status"] == STATUS_OK else None
        return Decoded(index, width=f["width"], height=f["height"], format=f["format"], error=f["error"],
                       content_hash=f["content_hash"] or "", size=f["size"] or 0, mtime_ns=f["mtime_ns"] or 0,
                       photo=photo)


class Staging:
    """The staging folder of one bundle: a folder per job, Parquet shards in each."""

    def __init__(self, bundle: Path) -> None:
        self.root = bundle / STAGING

    def new_job(self) -> Path:
        """A fresh folder for this job's shards (Ray creates it as it writes)."""
        return self.root / f"job-{uuid.uuid4().hex}"

    def jobs(self) -> list[Path]:
        """The folders of the jobs that wrote shards, oldest name first (names are random)."""
        return sorted(p for p in self.root.glob("job-*") if p.is_dir()) if self.root.is_dir() else []

    def rows(self, job: Path, columns: Sequence[str] | None = None) -> Iterator[ShardRow]:
        """Every row of a job's whole shards; a shard that does not open is deleted.

        `columns`: read only these (never the vectors when the caller only checks what
        is covered), else all.
        """
        for shard in sorted(job.glob("*.parquet")):
            try:
                reader = pq.ParquetFile(shard)
            except (OSError, pa.ArrowInvalid) as e:
                log.warning("deleting %s, cut short by a killed job (%s): its files are embedded again", shard, e)
                shard.unlink(missing_ok=True)
                continue
            with reader:
                start = 0
                for batch in reader.iter_batches(columns=list(columns) if columns else None):
                    yield from _rows(batch, str(shard), start)
                    start += batch.num_rows

    def clear(self) -> None:
        """Delete every shard: they are all in the catalog."""
        shutil.rmtree(self.root, ignore_errors=True)


def _rows(batch: pa.RecordBatch, shard: str, start: int) -> Iterator[ShardRow]:
    """A record batch's rows, numbered in their shard from `start`, each ok row with its
    vector (a view into one flat array)."""
    names = batch.schema.names
    facts = batch.select([n for n in names if n != "vector"]).to_pylist()
    if "vector" not in names:
        yield from (ShardRow(f["path"], f, None, shard, start + n) for n, f in enumerate(facts))
        return
    column = batch.column("vector")
    flat = column.flatten().to_numpy(zero_copy_only=False)
    ok = column.is_valid().to_numpy(zero_copy_only=False)
    vectors = flat.reshape(int(ok.sum()), -1) if ok.any() else flat.reshape(0, 0)
    at = np.cumsum(ok) - 1
    for n, f in enumerate(facts):
        yield ShardRow(f["path"], f, vectors[at[n]] if ok[n] else None, shard, start + n)
