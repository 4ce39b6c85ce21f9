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

    .venv/bin/python scripts/bench_ray.py --count 300             # this 2-core CPU, ~3 min
    python scripts/bench_ray.py --count 20000 --address auto      # a running cluster

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

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import CACHE, DATA, build_set, split_files  # noqa: E402  (the same image set)

from retrieval import Engine  # noqa: E402
from retrieval.cluster import RayJob  # noqa: E402
from retrieval.options import EngineOptions  # noqa: E402


def timed_index(bundle: Path, folder: Path, options: EngineOptions, job: RayJob | None) -> tuple[float, int]:
    """Seconds to index `folder` into a new bundle (model load included), and images embedded."""
    start = time.perf_counter()
    with Engine.create(bundle, options=options) as engine:
        report = engine.index([folder], ray=job)
    return time.perf_counter() - start, report.embedded


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
    args = ap.parse_args()
    if not 0 < args.small < args.count:
        sys.exit("error: --small must be above 0 and below --count")
    load_start = os.getloadavg()[0]
    sources = split_files(args.source, "train")
    full = build_set("images", sources, args.count, os.cpu_count() or 1)
    small = build_set("images", sources, args.small, os.cpu_count() or 1)
    options = EngineOptions(device=args.device, batch_size=args.batch_size)
    result: dict[str, Any] = {"count": args.count, "small": args.small, "device": args.device,
                              "batch_size": args.batch_size, "cpus": os.cpu_count(), "machine": platform.processor()}
    with tempfile.TemporaryDirectory() as tmp:
        result["local_small_s"], _ = timed_index(Path(tmp, "ls"), small, options, None)
        result["local_full_s"], embedded = timed_index(Path(tmp, "lf"), full, options, None)
        start = time.perf_counter()
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        result["ray_init_s"] = time.perf_counter() - start
        result["ray_cpus"] = ray.cluster_resources().get("CPU", 0)
        try:
            job = RayJob(batch_size=args.batch_size)
            result["ray_first_small_s"], _ = timed_index(Path(tmp, "r0"), small, options, job)
            result["ray_small_s"], _ = timed_index(Path(tmp, "rs"), small, options, job)
            result["ray_full_s"], ray_embedded = timed_index(Path(tmp, "rf"), full, options, job)
        finally:
            ray.shutdown()
    assert embedded == ray_embedded == args.count, (embedded, ray_embedded)
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
    print(f"{args.count} images ({args.small} in the small set), device {args.device}, batch {args.batch_size}, "
          f"{result['cpus']} CPUs, load {load_start:.1f} -> {result['load_avg'][1]:.1f}")
    print(f"ray.init: {result['ray_init_s']:.1f} s ({result['ray_cpus']:.0f} CPUs)")
    for path in ("local", "ray"):
        print(f"{path:6s} small {result[f'{path}_small_s']:6.1f} s   full {result[f'{path}_full_s']:6.1f} s   "
              f"{result[f'{path}_images_per_s']:6.1f} images/s   marginal {result[f'{path}_marginal_images_per_s']:6.1f}")
    print(f"Ray's fixed overhead per job: {result['ray_fixed_overhead_s']:.1f} s, the first job after ray.init "
          f"{result['ray_first_job_extra_s']:.1f} s more; written to {out}")


if __name__ == "__main__":
    main()
