"""Changing what a bundle indexes: the write side behind :meth:`Engine.index`, ``add``,
``remove`` and ``reindex``.

Each of these holds the bundle's write lock (one writer at a time, across processes; a
reader never needs it) and ends with the ANN index caught up and saved for the next
process. The Engine makes its :class:`Writer` on the first change, so opening a bundle to
read it does not load the planning code; the indexing loop (torch) loads only when a plan
is carried out.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bundle import AnnCache, CatalogCache, WriteLock
from .bundle.ann_cache import WHITENING_SETTING, whitening_record
from .catalog import Catalog, check_metadata
from .errors import ReadOnlyIndexError, RetrievalError
from .images.files import discover
from .indexing.plan import Plan, plan_sync
from .options import EngineOptions, Progress, resolve_device

if TYPE_CHECKING:
    from .cluster import RayJob
    from .extractors import Extractor, Manifest
    from .extractors.whitening import Whitening
    from .images.batches import LocalExtract
    from .indexing.run import EmbedPhase, IndexReport

__all__ = ["Writer"]


class Writer:
    """The write side of one open bundle.

    Args:
        embedder: the extractor that embeds images at indexing time (built on first call).
        manifest: the index's extractor, which a Ray job's workers build for themselves.
        local: in an index that keeps local features, what extracts them (in the decode
            workers) and the local-feature index, saved after each change like the ANN one.
    """

    def __init__(self, path: Path, catalog: Catalog, cache: AnnCache, lock: WriteLock, options: EngineOptions,
                 embedder: Callable[[], Extractor], manifest: Manifest,
                 local: tuple[LocalExtract, CatalogCache[Any]] | None = None) -> None:
        self.path = path
        self.catalog = catalog
        self.cache = cache
        self.local_extract, self.local_cache = local if local is not None else (None, None)
        self.lock = lock
        self.options = options
        self.embedder = embedder
        self.manifest = manifest

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the bundle's write lock: one writer at a time, across processes.

        Raises:
            ReadOnlyIndexError: the bundle was opened read-only (its folder cannot be written).
            IndexBusyError: another writer held the lock longer than the lock timeout.
        """
        if self.catalog.read_only:
            raise ReadOnlyIndexError(f"the index at {self.path} is read-only here: it can be searched, not changed")
        with self.lock.held():
            yield

    def sync(self, roots: Iterable[str | os.PathLike[str]], follow_links: bool,
             progress: Progress | None, ray: str | RayJob | None = None) -> IndexReport:
        """Bring the index in line with the files below `roots` (see :meth:`Engine.index`);
        with `ray`, the plan's new contents are embedded by a Ray job (planned as here).

        Raises:
            RetrievalError: a root does not exist (checked first: nothing is removed then),
                or `ray` is asked of an index it cannot embed for.
        """
        phase = self._ray_phase(ray) if ray is not None else None
        absolute = [os.path.abspath(r) for r in roots]
        for r in absolute:
            if not os.path.exists(r):
                raise RetrievalError(f"folder not found: {r}")
        with self.locked():
            start = time.perf_counter()
            skipped: list[tuple[str, str]] = []
            files = [str(p) for p in discover(absolute, follow_links=follow_links,
                                              on_skip=lambda path, why: skipped.append((str(path), why)))]
            existing = self.catalog.rows_under(absolute)
            plan = plan_sync(self.catalog, files, existing, sweep=True, progress=progress, skipped=skipped)
            return self._ingest(plan, progress, embed_phase=phase, started=start)

    def add(self, paths: Iterable[str | os.PathLike[str]], metadata: Mapping[str, Any] | None,
            progress: Progress | None) -> IndexReport:
        """Index these files, sweeping nothing else (see :meth:`Engine.add`).

        Raises:
            BadMetadataError: `metadata` cannot be stored (checked before any work).
        """
        clean = check_metadata(metadata) if metadata is not None else None
        files = [os.path.abspath(p) for p in paths]
        with self.locked():
            start = time.perf_counter()
            existing = self.catalog.rows_by_path(files)
            plan = plan_sync(self.catalog, files, existing, sweep=False, progress=progress)
            return self._ingest(plan, progress, clean, started=start)

    def remove(self, ids_or_paths: Iterable[int | str | os.PathLike[str]]) -> int:
        """Remove the images named by id or path, if indexed; returns how many were."""
        with self.locked():
            found = self.catalog.resolve_ids(ids_or_paths, strict=False)
            if found:
                self.catalog.apply(removals=sorted(found))
                self._persist()
            return len(found)

    def reindex(self, backend: str | None, params: Mapping[str, Any], whiten: bool | None = None,
                whiten_dim: int | None = None) -> dict[str, Any]:
        """Rebuild the ANN index from the stored vectors (see :meth:`Engine.reindex`):
        `whiten` True learns a whitening from them (at most `whiten_dim` dimensions),
        False drops the index's whitening, None keeps what the index does."""
        start = time.perf_counter()
        with self.locked():
            record: dict[str, Any] | None = None
            if whiten:
                whitening, learned_from = _learn_whitening(self.catalog, self.cache.dim, whiten_dim)
                record = whitening_record(whitening, learned_from)
                digest: str | None = record["digest"]
            elif whiten is None:
                whitening, digest = self.cache.whitening, self.cache.whitened
            else:
                whitening, digest = None, None

            def commit(settings: dict[str, Any]) -> None:
                values: dict[str, str | None] = {"index": json.dumps(settings)}
                if whiten is not None:  # learnt or dropped: with the settings that name it, in one transaction
                    values[WHITENING_SETTING] = json.dumps(record) if record else None
                self.catalog.set_settings(values)

            described = self.cache.switch(backend, params, commit, whitening, digest)
        return {**described, "seconds": time.perf_counter() - start}

    def _persist(self) -> None:
        """Catch the caches up with the change just committed and save them (see
        :meth:`CatalogCache.persist`); the caller holds the write lock."""
        self.cache.persist()
        if self.local_cache is not None:
            self.local_cache.persist()

    def _ray_phase(self, ray: str | RayJob) -> EmbedPhase:
        """The embed phase run as a Ray job (:mod:`.cluster`), checked before any work.

        Raises:
            RetrievalError: the index keeps local features or denoises what it indexes
                (the Ray workers build the plain extractor only), or Ray is not installed.
        """
        from .cluster import RayJob
        from .cluster.phase import RayPhase

        if self.local_extract is not None:
            raise RetrievalError("--ray cannot index into an index that keeps local features; index without --ray")
        if self.options.denoise is not None and self.options.denoise_at in ("index", "both"):
            raise RetrievalError("--ray does not run a denoiser; index without --ray, or denoise queries only")
        job = ray if isinstance(ray, RayJob) else RayJob(address=ray)
        return RayPhase(job, self.path, self.manifest, self.options, self.cache)

    def _ingest(self, plan: Plan, progress: Progress | None, metadata: dict[str, Any] | None = None,
                embed_phase: EmbedPhase | None = None, *, started: float) -> IndexReport:
        """Write what `plan` says and save the caches; the report's time counts from
        `started` (before discovery and planning: hashing new files is part of indexing)."""
        from .images.batches import default_workers  # these import torch
        from .indexing import run as ingest

        start = time.perf_counter()
        workers = default_workers(self.options.workers, resolve_device(self.options.device))
        report = ingest.execute(plan, self.catalog, self.embedder, self.cache.sync,
                                batch_size=self.options.batch_size, workers=workers,
                                metadata=metadata, progress=progress, decode=self.options.decode,
                                local=self.local_extract, embed_phase=embed_phase)
        self._persist()
        report.stages = {"planning": start - started, **report.stages,
                         "saving": time.perf_counter() - start - report.seconds}
        report.seconds = time.perf_counter() - started
        return report


WHITENING_SAMPLE = 100_000
"""Vectors a whitening is learned from at most (a uniform sample of a larger collection):
the covariance costs N x D^2, ~30 s for 100,000 1,280-d vectors here, and its estimate no
longer improves much past a few dozen vectors per dimension."""


def _learn_whitening(catalog: Catalog, dim: int, whiten_dim: int | None) -> tuple[Whitening, int]:
    """A whitening learned from the catalog's vectors (a seeded uniform sample of at most
    :data:`WHITENING_SAMPLE`), and how many it was learned from.

    Raises:
        RetrievalError: fewer than 2 indexed images, or a bad `whiten_dim`.
    """
    import numpy as np

    from .catalog import STATUS_OK
    from .extractors.whitening import learn_whitening

    total = catalog.counts().get(STATUS_OK, 0)
    if total < 2:
        raise RetrievalError(f"a whitening is learned from the indexed images: {total} is too few (at least 2)")
    if whiten_dim is not None and not 1 <= whiten_dim <= dim:
        raise RetrievalError(f"--whiten-dim must be from 1 to {dim}, not {whiten_dim}")
    keep = min(1.0, WHITENING_SAMPLE / total)
    rng = np.random.default_rng(0)
    sample = [vectors[rng.random(len(vectors)) < keep] if keep < 1.0 else vectors
              for _, vectors in catalog.iter_vectors()]
    vectors = np.concatenate(sample) if sample else np.zeros((0, dim), np.float32)
    return learn_whitening(vectors, whiten_dim), len(vectors)
