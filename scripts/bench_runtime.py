"""CPU inference runtimes in one run: PyTorch eager against ONNX Runtime and OpenVINO on the
same extractor, model alone and end to end, with the thread, batch and worker settings the
defaults come from.

  model     images/s of each runtime's embed (and OpenVINO in bfloat16, openvino-bf16, on a
            CPU that runs it natively) on the same uint8 canvases (probe scenes),
            batches interleaved round-robin so that the load of a shared machine falls on
            every runtime alike, before and after e2e, averaged; each runtime's lowest
            cosine with PyTorch's vectors.
  threads   ONNX Runtime's and OpenVINO's images/s at 1 thread and at one per core
            (interleaved round-robin, as above).
  batch     the chosen runtime's images/s at batch 1, 8 and 32.
  e2e       Engine.add of N JPEGs (~500x375, from Caltech-101 train photos, built by
            bench_index.py's image set) into a new index with each runtime, at 1 and 2
            decode workers; as a fraction of that runtime's model-only speed.
  query     warm single-image Engine.search p50/p99 per runtime, and a cold
            `retrieve query photo.jpg` (new process, model load included) wall time.
  quality   leave-one-out mAP of the first N Caltech-101 test images embedded by each
            runtime (relevant: same category): the same vectors should give the same mAP.

    .venv/bin/python scripts/bench_runtime.py --count 300        # this 2-core CPU, ~4 min

Writes bench-data/bench_runtime-<time>.json; prints a table. Load averages at the start
and end are recorded: compare runtimes within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_index import CACHE, DATA, build_set, split_files  # noqa: E402

from retrieval import Engine  # noqa: E402
from retrieval.runtimes import create_runtime_extractor
from retrieval.extractors import Extractor, ExtractorConfig  # noqa: E402
from retrieval.options import EngineOptions  # noqa: E402
from retrieval.runtimes.choice import probe_batch  # noqa: E402
from retrieval.runtimes.openvino_runtime import native_bf16  # noqa: E402
from retrieval.runtimes.session import installed  # noqa: E402
from retrieval.runtimes.threads import available_cores  # noqa: E402


def _mode(name: str) -> tuple[str, str]:
    """(runtime, precision) of a mode: a runtime's name, or openvino-bf16."""
    runtime, _, precision = name.partition("-")
    return runtime, precision or "auto"


def model_speed(extractors: dict[str, Extractor], batch: int, rounds: int) -> dict[str, dict[str, float]]:
    """images/s (median over rounds) and lowest cosine with "torch", round-robin."""
    size = next(iter(extractors.values())).manifest.config.image_size
    canvases = probe_batch(size, batch)
    reference = extractors["torch"].embed(*canvases) if "torch" in extractors else None
    times: dict[str, list[float]] = {name: [] for name in extractors}
    cosine: dict[str, float] = {}
    for name, ex in extractors.items():  # warm-up
        got = ex.embed(*canvases)
        cosine[name] = float((got * reference).sum(1).min()) if reference is not None else float("nan")
    for _ in range(rounds):
        for name, ex in extractors.items():
            start = time.perf_counter()
            ex.embed(*canvases)
            times[name].append(time.perf_counter() - start)
    return {name: {"images_per_s": batch / statistics.median(t), "min_cosine": cosine[name]}
            for name, t in times.items()}


def with_threads(runtime: str, config: ExtractorConfig, threads: int) -> Extractor:
    os.environ["RETRIEVE_THREADS"] = str(threads)
    try:
        return create_runtime_extractor(config, "cpu", _mode(runtime)[1], runtime=_mode(runtime)[0])
    finally:
        del os.environ["RETRIEVE_THREADS"]


def end_to_end(runtime: str, folder: Path, workers: int, batch: int) -> float:
    """images/s of Engine.add on every file of `folder` into a new index (model warm)."""
    paths = sorted(folder.iterdir())
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        options = EngineOptions(device="cpu", runtime=_mode(runtime)[0], precision=_mode(runtime)[1], workers=workers,
                                batch_size=batch)
        Engine.create(Path(tmp) / "bundle", options=options).close()  # opened again: the runtime builds its model
        with Engine.open(Path(tmp) / "bundle", options=options) as engine:
            engine.extractor  # noqa: B018 - loaded before the clock starts, as a warm engine would be
            start = time.perf_counter()
            report = engine.add(paths)
            seconds = time.perf_counter() - start
    assert not report.failed, report.failed[:3]
    return len(paths) / seconds


def query_latency(runtime: str, bundle: Path, queries: list[Path]) -> dict[str, float]:
    with Engine.open(bundle, options=EngineOptions(device="cpu", runtime=runtime)) as engine:
        engine.search(str(queries[0]), k=10)  # warm
        ms = []
        for q in queries:
            start = time.perf_counter()
            engine.search(str(q), k=10)
            ms.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def cold_query(runtime: str, bundle: Path, query: Path) -> float:
    exe = Path(sys.executable).with_name("retrieve")
    start = time.perf_counter()
    subprocess.run([str(exe), "query", str(query), "-i", str(bundle), "--runtime", runtime, "-k", "5"],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def quality(runtime: str, paths: list[Path]) -> float:
    """Leave-one-out mAP (relevant: same Caltech-101 category) of `paths` embedded by `runtime`."""
    from retrieval.evaluation.metrics import evaluate

    options = EngineOptions(device="cpu", runtime=_mode(runtime)[0], precision=_mode(runtime)[1])
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        Engine.create(Path(tmp) / "bundle", options=options).close()
        with Engine.open(Path(tmp) / "bundle", options=options) as engine:
            engine.add(paths)
            ids = [engine.catalog.resolve_ids([str(p)], strict=True).pop() for p in paths]
            vectors = engine.vectors(ids)
    labels = [p.parent.name for p in paths]
    return evaluate(vectors, labels, vectors, labels, query_ids=ids, gallery_ids=ids).map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="JPEGs indexed end to end per runtime")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed model batches per runtime")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--source", type=Path, default=DATA)
    parser.add_argument("--quality", type=int, default=400, metavar="N",
                        help="Caltech-101 test images for each runtime's leave-one-out mAP (0: skip)")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    config = ExtractorConfig()
    exact = ["torch", *(name for name in ("onnx", "openvino") if installed(name))]
    runtimes = [*exact, *(["openvino-bf16"] if installed("openvino") and native_bf16() else [])]
    extractors = {name: create_runtime_extractor(config, "cpu", _mode(name)[1], runtime=_mode(name)[0])
                  for name in runtimes}
    out: dict[str, Any] = {"cores": available_cores(), "batch": args.batch, "load_start": load_start}
    before = model_speed(extractors, args.batch, args.rounds)
    cores = available_cores()
    by_threads = {f"{name}-{threads}": with_threads(name, config, threads)
                  for name in runtimes[1:] for threads in sorted({1, cores})}
    out["threads"] = {key: m["images_per_s"] for key, m in model_speed(by_threads, args.batch, args.rounds).items()}
    fastest = max(exact[1:] or ["torch"], key=lambda n: before[n]["images_per_s"])  # what auto picks: float32
    out["batch_sizes"] = {str(b): model_speed({fastest: extractors[fastest]}, b, args.rounds)[fastest]["images_per_s"]
                          for b in (1, 8, 32)}
    sources = split_files(args.source, "train")
    folder = build_set("images", sources, args.count, max(1, cores))
    out["e2e"] = {f"{name}-w{w}": end_to_end(name, folder, w, args.batch) for name in runtimes
                  for w in sorted({1, cores})}
    after = model_speed(extractors, args.batch, args.rounds)
    out["model"] = {name: {"images_per_s": (before[name]["images_per_s"] + after[name]["images_per_s"]) / 2,
                           "before": before[name]["images_per_s"], "after": after[name]["images_per_s"],
                           "min_cosine": min(before[name]["min_cosine"], after[name]["min_cosine"])}
                    for name in runtimes}
    queries = split_files(args.source, "test")[: args.queries]
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        bundle = Path(tmp) / "bundle"
        with Engine.create(bundle, options=EngineOptions(device="cpu", runtime=fastest)) as engine:
            engine.add(sorted(folder.iterdir())[:100])
        out["query"] = {name: query_latency(name, bundle, queries) for name in [*exact, "auto"]}  # a float32 index
        out["cold_query_s"] = {name: cold_query(name, bundle, queries[0]) for name in [*exact, "auto"]}
    if args.quality:
        labelled = split_files(args.source, "test")[: args.quality]
        out["map"] = {name: quality(name, labelled) for name in runtimes}
    out["load_end"] = os.getloadavg()[0]
    path = CACHE / f"bench_runtime-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    torch_speed = out["model"]["torch"]["images_per_s"]
    print(f"model only, batch {args.batch}, {cores} cores (load {load_start:.1f} -> {out['load_end']:.1f}):")
    for name, m in out["model"].items():
        print(f"  {name:13s} {m['images_per_s']:6.1f} images/s ({m['before']:.1f} before e2e, {m['after']:.1f} after)  "
              f"{m['images_per_s'] / torch_speed:4.2f}x  min cosine {m['min_cosine']:.6f}")
    print("threads:", {k: round(v, 1) for k, v in out["threads"].items()})
    print(f"batch sizes ({fastest}):", {k: round(v, 1) for k, v in out["batch_sizes"].items()})
    for key, speed in out["e2e"].items():
        model = out["model"][key.rsplit("-", 1)[0]]["images_per_s"]
        print(f"  e2e {key:12s} {speed:6.1f} images/s = {speed / model:4.2f} x its model-only")
    for name, q in out["query"].items():
        print(f"  query {name:9s} p50 {q['p50_ms']:.1f} ms  p99 {q['p99_ms']:.1f} ms  cold {out['cold_query_s'][name]:.2f} s")
    if "map" in out:
        print(f"Caltech-101 mAP, first {args.quality} test images, leave-one-out:",
              {name: round(m, 4) for name, m in out["map"].items()})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
