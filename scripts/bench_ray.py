"""Indexing on a local Ray against the single process: throughput and fixed overhead.

One run, one machine, the same images, extractor, batch size and device for both:

  local   Engine.index in this process (decode workers, the model in this thread).
  ray     Engine.index(..., ray=...): the same plan, the embed phase as a Ray Data job
          (decode tasks, an embed actor pool, Parquet shards) loaded by this process.

Each path indexes a small set (--small images) and the full set (--count) into fresh
bundles; every wall time includes the model load (the Ray actors load their own). Ray runs
the small set twice: its first job after ray.init also starts and warms the worker
processes (timed apart, as is ray.init itself). The fixed overhead of a Ray job is its
second small-set time less the local one's; the marginal rate is (count - small) / (full
time - small time), the per-image speed once both are running. The 1-minute load average at the
start and the end is recorded: other busy processes slow both paths.

Then, on the same Ray, filling an inverted-list ANN index (IVF-PQ by default) with
--ann-vectors synthetic unit vectors written as --ann-shards Parquet shards, once trained:
in this process (what a local build does after training) against one Ray task a shard plus
the merge here (what a Ray job does, retrieval/cluster/ann_parts.py); the training itself is
the same for both and timed apart. --ann-vectors 0 skips it, --ann-only skips the images.

    .venv/bin/python scripts/bench_ray.py --count 300             # this 2-core CPU, ~3 min
    python scripts/bench_ray.py --count 20000 --address auto      # a running cluster
    .venv/bin/python scripts/bench_ray.py --ann-only --ann-vectors 50000

The images are bench_index.py's (Caltech-101 train photos as ~500x375 JPEGs, built once in
bench-data/). Results print as a table (or JSON with --json) and are written to
bench-data/bench_ray-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow.parquet as pq
import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import CACHE, DATA, build_set, split_files  # noqa: E402  (the same image set)

from retrieval import Engine  # noqa: E402
from retrieval.ann import create_index  # noqa: E402
from retrieval.ann.faiss_index import FaissIVF, fill_part  # noqa: E402
from retrieval.catalog import STATUS_OK  # noqa: E402
from retrieval.cluster import RayJob  # noqa: E402
from retrieval.cluster.ann_parts import ShardParts  # noqa: E402
from retrieval.cluster.shards import SCHEMA, shard_table  # noqa: E402
from retrieval.options import EngineOptions  # noqa: E402


def timed_index(bundle: Path, folder: Path, options: EngineOptions, job: RayJob | None) -> tuple[float, int]:
    """Seconds to index `folder` into a new bundle (model load included), and images embedded."""
    start = time.perf_counter()
    with Engine.create(bundle, options=options) as engine:
        report = engine.index([folder], ray=job)
    return time.perf_counter() - start, report.embedded


def bench_images(tmp: Path, small: Path, full: Path, count: int, options: EngineOptions,
                 job: RayJob | None) -> dict[str, float]:
    """Seconds for the small set then the full set, locally (`local_*`) or on Ray (`ray_*`,
    with a first small-set job before, which warms the workers)."""
    path = "ray" if job else "local"
    times: dict[str, float] = {}
    if job:
        times["ray_first_small_s"], _ = timed_index(tmp / "ray-first", small, options, job)
    times[f"{path}_small_s"], _ = timed_index(tmp / f"{path}-small", small, options, job)
    times[f"{path}_full_s"], embedded = timed_index(tmp / f"{path}-full", full, options, job)
    assert embedded == count, (path, embedded)
    return times


def bench_ann(folder: Path, count: int, dim: int, shards: int, backend: str) -> dict[str, Any]:
    """Seconds to train, to fill in this process, and to fill in Ray tasks (one a shard; twice,
    the first warming the workers) and merge, an index of `backend` over `count` synthetic
    vectors written as `shards` shards."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, count + 1, dtype=np.int64)
    blank = dict.fromkeys(n for n in SCHEMA.names if n != "vector")
    sources: dict[int, tuple[str, int]] = {}
    for s, part in enumerate(np.array_split(np.arange(count), shards)):
        shard = str(folder / f"part-{s}.parquet")
        pq.write_table(shard_table([blank | {"path": str(i), "status": STATUS_OK} for i in part], vectors[part]), shard)
        sources.update({int(ids[i]): (shard, row) for row, i in enumerate(part)})
    times: dict[str, float] = {}
    trained: list[bytes] = []

    def alone(blob: bytes, build_ids: np.ndarray, build_vectors: np.ndarray) -> list[bytes]:
        """Fill in this process, timed apart from the training that preceded it."""
        trained.append(blob)
        start = time.perf_counter()
        part = fill_part(blob, build_ids, build_vectors)
        times["ann_fill_local_s"] = time.perf_counter() - start
        return [part]

    index = create_index(backend, dim)
    assert isinstance(index, FaissIVF)
    start = time.perf_counter()
    index.build(ids, vectors, alone)
    times["ann_train_s"] = time.perf_counter() - start - times["ann_fill_local_s"]
    for run in ("ann_fill_ray_first_s", "ann_fill_ray_s"):  # the first starts workers that import FAISS
        start = time.perf_counter()
        parts = ShardParts(lambda: ray, sources)(trained[0], ids, vectors)
        times[run] = time.perf_counter() - start
    start = time.perf_counter()
    merged = faiss.deserialize_index(np.frombuffer(trained[0], np.uint8))
    for part in parts:
        merged.merge_from(faiss.deserialize_index(np.frombuffer(part, np.uint8)), 0)
    times["ann_merge_s"] = time.perf_counter() - start
    assert index.index is not None and merged.ntotal == index.index.ntotal == count
    return {"ann_backend": backend, "ann_vectors": count, "ann_dim": dim, "ann_shards": shards,
            "ann_nlist": int(merged.nlist), **times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300, help="images in the full set")
    ap.add_argument("--small", type=int, default=8, help="images in the small set (the fixed-overhead probe)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (both paths)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--address", default=None, help="a running cluster's address instead of a local Ray")
    ap.add_argument("--source", type=Path, default=DATA, help="Caltech-101 folder (images/, train.txt, test.txt)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    ap.add_argument("--ann-vectors", type=int, default=50_000, help="vectors of the ANN fill (0: skip it)")
    ap.add_argument("--ann-dim", type=int, default=1280, help="their dimension (the default extractor's)")
    ap.add_argument("--ann-shards", type=int, default=8, help="Parquet shards they are written as")
    ap.add_argument("--ann-backend", default="ivfpq", choices=("ivf", "ivfpq"))
    ap.add_argument("--ann-only", action="store_true", help="skip the images: only the ANN fill")
    args = ap.parse_args()
    if not args.ann_only and not 0 < args.small < args.count:
        sys.exit("error: --small must be above 0 and below --count")
    load_start = os.getloadavg()[0]
    options = EngineOptions(device=args.device, batch_size=args.batch_size)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "machine": platform.processor()}
    sets = None
    if not args.ann_only:
        result.update(count=args.count, small=args.small, device=args.device, batch_size=args.batch_size)
        sources = split_files(args.source, "train")
        sets = (build_set("images", sources, args.small, os.cpu_count() or 1),
                build_set("images", sources, args.count, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        if sets:
            result.update(bench_images(Path(tmp), *sets, args.count, options, None))
        start = time.perf_counter()
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        result["ray_init_s"] = time.perf_counter() - start
        result["ray_cpus"] = ray.cluster_resources().get("CPU", 0)
        try:
            if sets:
                result.update(bench_images(Path(tmp), *sets, args.count, options, RayJob(batch_size=args.batch_size)))
            if args.ann_vectors:
                result.update(bench_ann(Path(tmp), args.ann_vectors, args.ann_dim, args.ann_shards, args.ann_backend))
        finally:
            ray.shutdown()
    if sets:
        rest = args.count - args.small
        for path in ("local", "ray"):
            result[f"{path}_images_per_s"] = args.count / result[f"{path}_full_s"]
            result[f"{path}_marginal_images_per_s"] = rest / (result[f"{path}_full_s"] - result[f"{path}_small_s"])
        result["ray_fixed_overhead_s"] = result["ray_small_s"] - result["local_small_s"]
        result["ray_first_job_extra_s"] = result["ray_first_small_s"] - result["ray_small_s"]
    result["load_avg"] = [load_start, os.getloadavg()[0]]
    out = CACHE / f"bench_ray-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['cpus']} CPUs, load {load_start:.1f} -> {result['load_avg'][1]:.1f}; "
          f"ray.init: {result['ray_init_s']:.1f} s ({result['ray_cpus']:.0f} CPUs)")
    if sets:
        print(f"{args.count} images ({args.small} in the small set), device {args.device}, batch {args.batch_size}")
        for path in ("local", "ray"):
            print(f"{path:6s} small {result[f'{path}_small_s']:6.1f} s   full {result[f'{path}_full_s']:6.1f} s   "
                  f"{result[f'{path}_images_per_s']:6.1f} images/s   "
                  f"marginal {result[f'{path}_marginal_images_per_s']:6.1f}")
        print(f"Ray's fixed overhead per job: {result['ray_fixed_overhead_s']:.1f} s, the first job after ray.init "
              f"{result['ray_first_job_extra_s']:.1f} s more")
    if args.ann_vectors:
        print(f"{result['ann_backend']} over {result['ann_vectors']} x {result['ann_dim']}-d vectors, nlist "
              f"{result['ann_nlist']}: train {result['ann_train_s']:.1f} s, fill here {result['ann_fill_local_s']:.1f} s, "
              f"fill in {result['ann_shards']} Ray tasks {result['ann_fill_ray_s']:.1f} s (the first time "
              f"{result['ann_fill_ray_first_s']:.1f} s) + merge {result['ann_merge_s']:.1f} s")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
