"""The Ray Data pipeline: paths -> decode (CPU tasks) -> embed (actor pool) -> Parquet shards."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from ..extractors import Manifest
from ..options import EngineOptions
from .job import MAX_RETRIES, ClusterError, RayJob, innermost
from .workers import Embedder, decode_files

__all__ = ["embed_resources", "embed_to_shards"]


def embed_to_shards(ray: Any, paths: list[str], out: Path, job: RayJob, manifest: Manifest,
                    options: EngineOptions, show_progress: bool) -> None:
    """Run the pipeline over `paths` on the connected Ray, writing shards into `out`;
    `show_progress` False keeps Ray Data's progress bars and INFO lines off stderr.

    Raises:
        ClusterError: the job failed (shards it completed stay in `out`, for the next run).
    """
    batch = job.batch_size or options.batch_size
    preprocess = manifest.preprocessor()
    embed = embed_resources(ray.cluster_resources(), options.device, job.actors)
    ray.data.DataContext.get_current().enable_progress_bars = show_progress
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths) // batch))
    ds = ds.map_batches(decode_files, fn_kwargs={"preprocess": preprocess}, batch_size=batch, batch_format="numpy")
    with warnings.catch_warnings():
        # Ray 2.60 deprecates passing remote args as keywords but names no other way to bound
        # an actor pool's restarts (its default is unbounded: a file that kills its worker
        # every time would hang the job); pyproject keeps Ray below 2.64, which drops them.
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        ds = ds.map_batches(job.embedder or Embedder, batch_size=batch, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=embed.pop("actors")),
                            fn_constructor_kwargs={"manifest": manifest, "device": embed.pop("device"),
                                                   "precision": options.precision, "runtime": options.runtime},
                            max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES, **embed)
    ray_data_log = logging.getLogger("ray.data")
    level = ray_data_log.level
    if not show_progress:  # quiet: Ray Data's account of the job too, for this job (warnings still show)
        ray_data_log.setLevel(logging.WARNING)
    try:
        ds.write_parquet(str(out))
    except ray.exceptions.RayError as e:
        raise ClusterError(f"the Ray job failed ({innermost(e)}); rerun it to resume from its completed shards") \
            from None
    finally:
        ray_data_log.setLevel(level)


def embed_resources(cluster: dict[str, float], device: str, actors: int | None) -> dict[str, Any]:
    """The embed actors' resources and pool size: a GPU each where the cluster has GPUs
    (unless the options ask for the CPU), else up to 4 CPUs each from half the CPUs, the
    other half left to the decode tasks."""
    gpus = int(cluster.get("GPU", 0))
    if gpus and device != "cpu":
        return {"device": "cuda", "num_gpus": 1, "actors": actors or gpus}
    half = max(1, int(cluster.get("CPU", 1)) // 2)
    threads = min(4, half)
    return {"device": "cpu", "num_cpus": threads, "actors": actors or max(1, half // threads)}
