"""Carrying out an indexing plan: cheap writes first, then decode and embed in batches.

Decoding runs in loader workers, embedding in this thread, and each batch's commit
(rows and vectors in one transaction, then the ANN catch-up) in a writer thread while
the next batch embeds: the :class:`~retrieval.images.embedding.EmbedLoop` with its
`write` hook. With device decoding (the default on a GPU), workers only read JPEG files
and a helper thread decodes each batch on the device, one batch ahead. A run killed at
any point loses at most the batches in flight, and the next run finds the rest to do.

What is stored with a vector describes the bytes that were decoded: the worker hashes
the buffer it decodes, so a file replaced after the plan hashed it is stored with its
new content's hash (and the stat taken when it was read), never the old one's; the
photo's EXIF facts are read by the worker from those same bytes.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..catalog import STATUS_FAILED, Catalog, FileRecord
from ..catalog.facts import PhotoFacts
from ..extractors import Extractor
from ..images.batches import Decoded, DecodedBatch, LocalExtract
from ..images.embedding import EmbedLoop
from ..options import Progress
from .plan import Plan

__all__ = ["EmbedPhase", "IndexReport", "batch_records", "execute"]


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
    skipped: list[tuple[str, str]] = field(default_factory=list)  # left out by discovery (links leading out)
    unknown: list[str] = field(default_factory=list)  # files of types that are not read
    excluded: int = 0  # files left out by the index's exclusions
    removed_paths: list[str] = field(default_factory=list)
    embedded: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # seconds by stage: see STAGES

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added, "updated": self.updated, "moved": self.moved,
            "duplicates": self.duplicates, "removed": self.removed, "unchanged": self.unchanged,
            "failed": len(self.failed), "embedded": self.embedded,
            "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 2),
            "stages": {name: round(value, 3) for name, value in self.stages.items()},
            "failures": [{"path": p, "error": e} for p, e in self.failed],
            "skipped": len(self.skipped), "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped],
            "removed_paths": self.removed_paths,
            "unknown_types": len(self.unknown), "unknown_files": self.unknown, "excluded": self.excluded,
        }

    def where_the_time_went(self) -> str:
        """The stages' seconds in one line, for -v and benchmarks: "planning 3.1 s, ..."."""
        return ", ".join(f"{name.replace('_', ' ')} {value:.1f} s" for name, value in self.stages.items())

    def unknown_suffixes(self) -> str:
        """The unknown types found, most frequent first: ".mov 3, .txt 1"."""
        counts = Counter(os.path.splitext(p)[1].lower() or "(no suffix)" for p in self.unknown)
        return ", ".join(f"{suffix} {n}" for suffix, n in counts.most_common())


EmbedPhase = Callable[[Plan, Catalog, Callable[[], object], dict[str, Any] | None, Progress | None, IndexReport],
                      None]
"""What embeds and commits a plan's new contents in place of the local loop: called with
(plan, catalog, after_batch, metadata, progress, report); it counts what it writes in the
report, through :func:`batch_records`."""


def execute(plan: Plan, catalog: Catalog, extractor: Callable[[], Extractor], after_batch: Callable[[], object],
            *, batch_size: int, workers: int, metadata: dict[str, Any] | None = None,
            progress: Progress | None = None, decode: str = "auto", local: LocalExtract | None = None,
            embed_phase: EmbedPhase | None = None) -> IndexReport:
    """Write what the plan says; `extractor` is called only if something must be embedded.

    `after_batch` runs after every commit (the Engine catches its ANN index up there).
    `decode` says where JPEGs are decoded (see :func:`~retrieval.images.device.decodes_on_device`).
    `local`, in an index that keeps local features, extracts them beside each embedding;
    a copy of indexed content takes its source's, as it takes its vector.
    `embed_phase`, when given, embeds and commits the plan's new contents instead of this
    process's loop (a Ray job, :mod:`retrieval.cluster`): everything else stays as here. It
    is called even with nothing to embed, to clear what a killed job of its own left behind.
    """
    start = time.perf_counter()
    report = IndexReport(unchanged=plan.unchanged, removed=len(plan.removals),
                         removed_paths=plan.removed_paths, moved=len(plan.moves))
    report.failed = [(r.path, r.error or "") for r in plan.failed]
    report.failed += [(p, "file name is not valid UTF-8; rename it") for p in plan.unstorable]
    report.skipped, report.unknown, report.excluded = list(plan.skipped), list(plan.unknown), plan.excluded
    copies = [rec for rec, _ in plan.copies]
    sources = catalog.vectors([src for _, src in plan.copies])
    source_rows = catalog.rows_by_id([src for _, src in plan.copies])
    local_sources = catalog.local_features([src for _, src in plan.copies]) if local is not None else {}
    for rec, src in plan.copies:  # same bytes as an indexed image: its vector, features and EXIF facts
        rec.vector, rec.local, rec.photo = sources[src], local_sources.get(src), PhotoFacts.of_row(source_rows[src])
    for rec in plan.moves + copies + plan.failed:
        rec.metadata = metadata
    report.duplicates = len(copies)
    if plan.moves or copies or plan.failed or plan.touches:
        catalog.apply(plan.moves + copies + plan.failed, touches=plan.touches)
    if embed_phase is not None:
        embed_phase(plan, catalog, after_batch, metadata, progress, report)
    elif plan.embed:
        _embed(plan, catalog, extractor(), after_batch, batch_size, workers, decode, metadata, progress, report,
               local)
    if plan.removals:
        catalog.apply(removals=plan.removals)
    report.seconds = time.perf_counter() - start
    return report


def _embed(plan: Plan, catalog: Catalog, extractor: Extractor, after_batch: Callable[[], object],
           batch_size: int, workers: int, decode: str, metadata: dict[str, Any] | None,
           progress: Progress | None, report: IndexReport, local: LocalExtract | None) -> None:
    """Embed the plan's new contents, committing each batch while the next one embeds."""
    def commit(batch: DecodedBatch, vectors: np.ndarray | None) -> None:
        catalog.apply(batch_records(plan, batch.items, vectors, batch.failures, metadata, report))
        after_batch()

    loop = EmbedLoop([s.path for s, _ in plan.embed], extractor.preprocessor,
                     lambda b: extractor.embed_adaptive(b.pixels, b.heights, b.widths),
                     batch_size=batch_size, workers=workers, device=extractor.device, decode=decode,
                     progress=progress, phase="embedding", write=commit, local=local, exif=True)
    loop.run()
    report.stages.update(loop.timings)


def batch_records(plan: Plan, items: Sequence[Decoded], vectors: np.ndarray | None, failures: Sequence[Decoded],
                  metadata: dict[str, Any] | None, report: IndexReport) -> list[FileRecord]:
    """Rows for one embedded batch's files (`items`, each `Decoded.index` a position in
    ``plan.embed``, with `vectors` in the same order), their twins and its `failures`, counted
    in `report`: by the local writer thread, and by the loader of a Ray job's shards."""
    records: list[FileRecord] = []
    for item, vec in zip(items, vectors if vectors is not None else []):
        fresh = _with_twins(plan, item, metadata, width=item.width, height=item.height, format=item.format,
                            vector=np.asarray(vec), local=item.local, photo=item.photo)
        report.embedded += 1
        report.added += sum(r.id is None for r in fresh)
        report.updated += sum(r.id is not None for r in fresh)
        report.duplicates += len(fresh) - 1
        records += fresh
    for item in failures:
        bad = _with_twins(plan, item, metadata, status=STATUS_FAILED, error=item.error)
        report.failed += [(r.path, item.error or "") for r in bad]
        records += bad
    return records


def _with_twins(plan: Plan, item: Decoded, metadata: dict[str, Any] | None, **fields: Any) -> list[FileRecord]:
    """Records for a decoded file and, if the bytes decoded are still the content the
    plan hashed, for every file found with that content.

    The file's own record takes the hash and stat of the bytes the worker read (the
    plan's, when nothing could be read). A file replaced since the plan hashed it no
    longer speaks for its twins: they were not read, so they are left for the next run,
    which plans them on their own.
    """
    state, row = plan.embed[item.index]
    read = bool(item.content_hash)
    digest = item.content_hash if read else state.content_hash
    own = FileRecord(path=state.path, content_hash=digest, size=item.size if read else state.size,
                     mtime_ns=item.mtime_ns if read else state.mtime_ns, metadata=metadata,
                     id=row.id if row else None, **fields)
    twins = plan.twins[state.content_hash] if digest == state.content_hash else []
    return [own, *(FileRecord(path=s.path, content_hash=digest, size=s.size, mtime_ns=s.mtime_ns,
                              metadata=metadata, id=r.id if r else None, **fields) for s, r in twins)]
