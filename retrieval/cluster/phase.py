"""The embed phase of an indexing run as a Ray job: resume, run, load.

Resuming needs no bookkeeping beyond the shards themselves: a row of an earlier job still
stands for a file of this plan when the bytes it read have the hash the plan found now (the
file did not change since). The new job embeds only the files no such row covers; then one
writer, this process, loads the rows into the catalog in batches and the staging folder is
deleted. A run killed while loading finds the loaded files unchanged and loads the rest;
one killed after loading but before deleting leaves shards that no later plan needs, which
the next run with ``ray`` deletes (with nothing to embed, it starts no job).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import Catalog
from ..extractors import Manifest
from ..images.batches import Decoded
from ..indexing.plan import Plan
from ..indexing.run import IndexReport, batch_records
from ..options import EngineOptions, Progress
from .job import ClusterError, RayJob, ray_session, require_ray

__all__ = ["LOAD_BATCH", "RayPhase"]

LOAD_BATCH = 2048
"""Rows per catalog transaction when loading shards (then the ANN index catches up)."""


class RayPhase:
    """An :data:`~retrieval.indexing.run.EmbedPhase` that runs `job` for the bundle at `bundle`."""

    def __init__(self, job: RayJob, bundle: Path, manifest: Manifest, options: EngineOptions) -> None:
        require_ray()  # before any planning: a missing extra is said at once
        self.job, self.bundle, self.manifest, self.options = job, bundle, manifest, options

    def __call__(self, plan: Plan, catalog: Catalog, after_batch: Callable[[], object],
                 metadata: dict[str, Any] | None, progress: Progress | None, report: IndexReport) -> None:
        # imported here, once require_ray has said whether Ray Data (and pyarrow) is installed
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
        if pending:
            if progress:
                progress("embedding on Ray", 0, len(pending))
            with ray_session(self.job.address) as ray:
                embed_to_shards(ray, pending, fresh, self.job, self.manifest, self.options, progress is not None)
        loader = _Loader(plan, catalog, after_batch, metadata, progress, report)
        for job_dir in [*earlier, fresh]:
            for row in staging.rows(job_dir):
                # this job's rows describe the files as read now; earlier ones must still stand
                i = position.get(row.path) if job_dir == fresh else \
                    _still_stands(plan, position, row.path, row.facts["content_hash"])
                if i is not None:
                    loader.add(i, row.decoded(i), row.vector)
        loader.flush()
        missing = len(plan.embed) - int(loader.loaded.sum())
        if missing:
            raise ClusterError(f"the Ray job returned no row for {missing} of {len(plan.embed)} files; "
                               "rerun it to embed them")
        staging.clear()


def _still_stands(plan: Plan, position: dict[str, int], path: str, content_hash: str | None) -> int | None:
    """The plan position an earlier job's row stands for, or None: its file is not in this
    plan, or the bytes it read are not those the plan hashed (changed, or never read)."""
    i = position.get(path)
    return i if i is not None and content_hash and content_hash == plan.embed[i][0].content_hash else None


class _Loader:
    """Loads rows into the catalog through the local writer's record building, a batch a
    transaction; a file already loaded from another shard is not loaded twice."""

    def __init__(self, plan: Plan, catalog: Catalog, after_batch: Callable[[], object],
                 metadata: dict[str, Any] | None, progress: Progress | None, report: IndexReport) -> None:
        self.plan, self.catalog, self.after_batch = plan, catalog, after_batch
        self.metadata, self.progress, self.report = metadata, progress, report
        self.loaded = np.zeros(len(plan.embed), bool)
        self.items: list[Decoded] = []
        self.vectors: list[np.ndarray] = []
        self.failures: list[Decoded] = []

    def add(self, index: int, decoded: Decoded, vector: np.ndarray | None) -> None:
        if self.loaded[index]:
            return
        self.loaded[index] = True
        if vector is None:
            self.failures.append(decoded)
        else:
            self.items.append(decoded)
            self.vectors.append(vector)
        if len(self.items) + len(self.failures) >= LOAD_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.items and not self.failures:
            return
        vectors = np.stack(self.vectors) if self.vectors else None
        self.catalog.apply(batch_records(self.plan, self.items, vectors, self.failures, self.metadata, self.report))
        self.after_batch()
        self.items, self.vectors, self.failures = [], [], []
        if self.progress:
            self.progress("loading", int(self.loaded.sum()), len(self.plan.embed))
