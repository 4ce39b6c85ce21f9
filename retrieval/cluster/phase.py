"""The embed phase of an indexing run as a Ray job: resume, run, load.

Resuming needs no bookkeeping beyond the shards themselves: a row of an earlier job still
stands for a file of this plan when the bytes it read have the hash the plan found now (the
file did not change since). The new job embeds only the files no such row covers; then one
writer, this process, loads the rows into the catalog in batches and the staging folder is
deleted. A run killed while loading finds the loaded files unchanged and loads the rest;
one killed after loading but before deleting leaves shards that no later plan needs, which
the next run with ``ray`` deletes (with nothing to embed, it starts no job).

The ANN index catches up after each loaded batch, as after local indexing. Given the
bundle's ANN cache, the phase then rebuilds it if it is due, before the shards are deleted:
an IVF or IVF-PQ index is filled from the shards in parallel Ray tasks (:mod:`.ann_parts`)
and installed at the catalog generation it reflects, so catching up adds nothing twice.
Without the cache, saving the index after the run rebuilds it in one process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..catalog import Catalog
from ..extractors import Manifest
from ..images.batches import Decoded
from ..indexing.plan import Plan
from ..indexing.run import IndexReport, batch_records
from ..options import EngineOptions, Progress
from .job import ClusterError, RayJob, ray_session, require_ray

if TYPE_CHECKING:
    from ..bundle import AnnCache

__all__ = ["LOAD_BATCH", "RayPhase"]

LOAD_BATCH = 2048
"""Rows per catalog transaction when loading shards (then the ANN index catches up)."""


class RayPhase:
    """An :data:`~retrieval.indexing.run.EmbedPhase` that runs `job` for the bundle at `bundle`;
    given the bundle's ANN `cache`, it rebuilds the index from the shards when due."""

    def __init__(self, job: RayJob, bundle: Path, manifest: Manifest, options: EngineOptions,
                 cache: AnnCache | None = None) -> None:
        require_ray()  # before any planning: a missing extra is said at once
        self.job, self.bundle, self.manifest, self.options, self.cache = job, bundle, manifest, options, cache

    def __call__(self, plan: Plan, catalog: Catalog, after_batch: Callable[[], object],
                 metadata: dict[str, Any] | None, progress: Progress | None, report: IndexReport) -> None:
        # imported here, once require_ray has said whether Ray Data (and pyarrow) is installed
        from .ann_parts import ShardParts
        from .pipeline import embed_to_shards
        from .shards import Staging

        staging = Staging(self.bundle)
        position = {state.path: i for i, (state, _) in enumerate(plan.embed)}
        earlier = staging.jobs()
        covered = np.zeros(len(plan.embed), bool)
        for job_dir in earlier:
            for row in staging.rows(job_dir, columns=("path", "content_hash")):
                i = _still_stands(plan, position, row.path, row.facts["content_hash"])
                if i is not None:
                    covered[i] = True
        pending = [plan.embed[i][0].path for i in np.flatnonzero(~covered)]
        fresh = staging.new_job()
        with contextlib.ExitStack() as session:
            ray: Any = None

            def connect() -> Any:
                """Ray, connected on first use: one session for embedding and filling the index."""
                nonlocal ray
                ray = ray or session.enter_context(ray_session(self.job.address))
                return ray

            if pending:
                if progress:
                    progress("embedding on Ray", 0, len(pending))
                embed_to_shards(connect(), pending, fresh, self.job, self.manifest, self.options,
                                progress is not None)
            if self.cache is not None:  # the index as before the rows come in: else its first catch-up
                self.cache.sync()       # would build it from them all, here, trained and not due
            loader = _Loader(plan, catalog, after_batch, metadata, progress, report)
            for job_dir in [*earlier, fresh]:
                for row in staging.rows(job_dir):
                    # this job's rows describe the files as read now; earlier ones must still stand
                    i = position.get(row.path) if job_dir == fresh else \
                        _still_stands(plan, position, row.path, row.facts["content_hash"])
                    if i is not None:
                        loader.add(i, row.decoded(i), row.vector, (row.shard, row.row))
            loader.flush()
            missing = len(plan.embed) - int(loader.loaded.sum())
            if missing:
                raise ClusterError(f"the Ray job returned no row for {missing} of {len(plan.embed)} files; "
                                   "rerun it to embed them")
            if self.cache is not None and loader.sources:
                self.cache.rebuild_if_due(ShardParts(connect, loader.sources))
        staging.clear()


def _still_stands(plan: Plan, position: dict[str, int], path: str, content_hash: str | None) -> int | None:
    """The plan position an earlier job's row stands for, or None: its file is not in this
    plan, or the bytes it read are not those the plan hashed (changed, or never read)."""
    i = position.get(path)
    return i if i is not None and content_hash and content_hash == plan.embed[i][0].content_hash else None


class _Loader:
    """Loads rows into the catalog through the local writer's record building, a batch a
    transaction; a file already loaded from another shard is not loaded twice. `sources`:
    the shard row (file, row number) each loaded file's catalog id took its vector from."""

    def __init__(self, plan: Plan, catalog: Catalog, after_batch: Callable[[], object],
                 metadata: dict[str, Any] | None, progress: Progress | None, report: IndexReport) -> None:
        self.plan, self.catalog, self.after_batch = plan, catalog, after_batch
        self.metadata, self.progress, self.report = metadata, progress, report
        self.loaded = np.zeros(len(plan.embed), bool)
        self.items: list[Decoded] = []
        self.vectors: list[np.ndarray] = []
        self.rows: list[tuple[str, int]] = []
        self.failures: list[Decoded] = []
        self.sources: dict[int, tuple[str, int]] = {}

    def add(self, index: int, decoded: Decoded, vector: np.ndarray | None, row: tuple[str, int]) -> None:
        if self.loaded[index]:
            return
        self.loaded[index] = True
        if vector is None:
            self.failures.append(decoded)
        else:
            self.items.append(decoded)
            self.vectors.append(vector)
            self.rows.append(row)
        if len(self.items) + len(self.failures) >= LOAD_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.items and not self.failures:
            return
        vectors = np.stack(self.vectors) if self.vectors else None
        records = batch_records(self.plan, self.items, vectors, self.failures, self.metadata, self.report)
        ids = dict(zip((r.path for r in records), self.catalog.apply(records)))
        for item, row in zip(self.items, self.rows):  # (twins took the vector too: the catalog has theirs)
            self.sources[ids[self.plan.embed[item.index][0].path]] = row
        self.after_batch()
        self.items, self.vectors, self.rows, self.failures = [], [], [], []
        if self.progress:
            self.progress("loading", int(self.loaded.sum()), len(self.plan.embed))
