"""Carrying out an indexing plan: cheap writes first, then decode and embed in batches.

Decoding runs in loader workers, embedding in this thread, and each batch's commit
(rows and vectors in one transaction, then the ANN catch-up) in a writer thread while
the next batch embeds. With device decoding (the default on a GPU), workers only read
JPEG files and a helper thread decodes each batch on the device, one batch ahead. A run
killed at any point loses at most the batches in flight, and the next run finds the rest
to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .catalog import STATUS_FAILED, Catalog, FileRecord
from .device_decode import decodes_on_device, finish_batch
from .extractors import Extractor
from .images import DecodeDataset, DecodedBatch, decode_loader
from .indexer import Plan

__all__ = ["IndexReport", "execute"]

Progress = Callable[[str, int, int], None]
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class IndexReport:
    """What an indexing run did."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    duplicates: int = 0  # content already indexed under another path: vector reused
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed_paths: list[str] = field(default_factory=list)
    embedded: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added, "updated": self.updated, "moved": self.moved,
            "duplicates": self.duplicates, "removed": self.removed, "unchanged": self.unchanged,
            "failed": len(self.failed), "embedded": self.embedded,
            "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 2),
            "failures": [{"path": p, "error": e} for p, e in self.failed],
            "removed_paths": self.removed_paths,
        }


def execute(plan: Plan, catalog: Catalog, extractor: Callable[[], Extractor], after_batch: Callable[[], None],
            *, batch_size: int, workers: int, metadata: dict[str, Any] | None = None,
            progress: Progress | None = None, decode: str = "auto") -> IndexReport:
    """Write what the plan says; `extractor` is called only if something must be embedded.

    `after_batch` runs after every commit (the Engine catches its ANN index up there).
    `decode` says where JPEGs are decoded (see :func:`~retrieval.device_decode.decodes_on_device`).
    """
    start = time.perf_counter()
    report = IndexReport(unchanged=plan.unchanged, removed=len(plan.removals),
                         removed_paths=plan.removed_paths, moved=len(plan.moves))
    report.failed = [(r.path, r.error or "") for r in plan.failed]
    report.failed += [(p, "file name is not valid UTF-8; rename it") for p in plan.unstorable]
    copies = [rec for rec, _ in plan.copies]
    sources = catalog.vectors([src for _, src in plan.copies])
    for rec, src in plan.copies:
        rec.vector = sources[src]
    for rec in plan.moves + copies + plan.failed:
        rec.metadata = metadata
    report.duplicates = len(copies)
    if plan.moves or copies or plan.failed or plan.touches:
        catalog.apply(plan.moves + copies + plan.failed, touches=plan.touches)
    if plan.embed:
        _embed(plan, catalog, extractor(), after_batch, batch_size, workers, decode, metadata, progress, report)
    if plan.removals:
        catalog.apply(removals=plan.removals)
    report.seconds = time.perf_counter() - start
    return report


def _embed(plan: Plan, catalog: Catalog, extractor: Extractor, after_batch: Callable[[], None],
           batch_size: int, workers: int, decode: str, metadata: dict[str, Any] | None,
           progress: Progress | None, report: IndexReport) -> None:
    preprocess, device = extractor.preprocessor, extractor.device
    on_device = decodes_on_device(decode, device, preprocess.interpolation)
    dataset = DecodeDataset([s.path for s, _ in plan.embed], preprocess, jpeg_bytes=on_device)
    loader = decode_loader(dataset, workers, pin=device.type == "cuda", batch_size=batch_size)
    batches: Iterable[DecodedBatch] = loader
    if on_device:
        batches = _one_ahead(loader, lambda b: finish_batch(b, preprocess, device, dataset.decode_on_host))
    done = 0
    with ThreadPoolExecutor(1, thread_name_prefix="catalog-writer") as writer:
        pending: Future[None] | None = None
        for batch in batches:
            records = _records(plan, batch, extractor, metadata, report)
            if pending is not None:
                pending.result()  # at most one write in flight: memory stays bounded, errors surface
            pending = writer.submit(_commit, catalog, records, after_batch)
            report.embedded += len(batch.indices)
            done += len(batch.indices) + len(batch.failures)
            if progress:
                progress("embedding", done, len(plan.embed))
        if pending is not None:
            pending.result()


def _one_ahead(items: Iterable[T], fn: Callable[[T], R]) -> Iterator[R]:
    """`fn` over `items` in a helper thread, one result ahead of the caller.

    Device decoding of the next batch then overlaps the embedding of this one (both
    mostly wait on the GPU, outside the GIL), at the cost of one more batch in memory.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="device-decode") as helper:
        ahead: Future[R] | None = None
        for item in items:
            following = helper.submit(fn, item)
            if ahead is not None:
                yield ahead.result()
            ahead = following
        if ahead is not None:
            yield ahead.result()


def _commit(catalog: Catalog, records: list[FileRecord], after_batch: Callable[[], None]) -> None:
    catalog.apply(records)
    after_batch()


def _records(plan: Plan, batch: DecodedBatch, extractor: Extractor, metadata: dict[str, Any] | None,
             report: IndexReport) -> list[FileRecord]:
    """Embed one decoded batch; rows for its files, their twins and its failures."""
    vectors = extractor.embed_adaptive(batch.pixels, batch.heights, batch.widths) if batch.indices else []
    records: list[FileRecord] = []
    for item, vec in zip(batch.items, vectors):
        fresh = _with_twins(plan, item.index, metadata, width=item.width, height=item.height,
                            format=item.format, vector=np.asarray(vec))
        report.added += sum(r.id is None for r in fresh)
        report.updated += sum(r.id is not None for r in fresh)
        report.duplicates += len(fresh) - 1
        records += fresh
    for item in batch.failures:
        bad = _with_twins(plan, item.index, metadata, status=STATUS_FAILED, error=item.error)
        report.failed += [(r.path, item.error or "") for r in bad]
        records += bad
    return records


def _with_twins(plan: Plan, index: int, metadata: dict[str, Any] | None, **fields: Any) -> list[FileRecord]:
    """Records for an embedded file and every file found with the same content."""
    state, row = plan.embed[index]
    return [FileRecord(path=s.path, content_hash=state.content_hash, size=s.size, mtime_ns=s.mtime_ns,
                       metadata=metadata, id=r.id if r else None, **fields)
            for s, r in [(state, row), *plan.twins[state.content_hash]]]
