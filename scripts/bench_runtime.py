"""CPU inference runtimes in one run: PyTorch eager against ONNX Runtime and OpenVINO on the
same extractor, model alone and end to end, with the thread, batch and worker settings the
defaults come from.

  model     images/s of each runtime's embed (and OpenVINO in bfloat16, openvino-bf16, on a
            CPU that runs it natively, and OpenVINO on the int8 graph, openvino-int8,
            calibrated on the first --int8 Caltech-101 train photos) on the same uint8
            canvases (probe scenes),
            batches interleaved round-robin so that the load of a shared machine falls on
            every runtime alike, before and after e2e, averaged; each runtime's lowest
            cosine with PyTorch's vectors.
  threads   ONNX Runtime's and OpenVINO's images/s at 1 thread and at one per core
            (interleaved round-robin, as above).
  batch     the chosen runtime's images/s at batch 1, 8 and 32.
  e2e       Engine.add of N JPEGs (~500x375, from Caltech-101 train photos, built by
            bench_index.py's image set) into a new index with each runtime, at 1 and 2
            decode workers, each in a process of its own, as a fraction of that runtime's
            model-only speed measured in the same process; --repeats runs of each,
            round-robin, the median ratio reported.
  query     warm single-image Engine.search p50/p99 per runtime, and a cold
            `retrieve query photo.jpg` (new process, model load included) wall time.
  quality   leave-one-out mAP of the first N Caltech-101 test images embedded by each
            runtime (relevant: same category): the same vectors should give the same mAP;
            each mode's lowest and mean cosine with PyTorch's vectors of those photos.

    .venv/bin/python scripts/bench_runtime.py --count 1000       # this 2-core CPU, ~25 min
    .venv/bin/python scripts/bench_runtime.py --parts model,quality --quality 2893   # precisions

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
from PIL import Image  # noqa: E402

from retrieval import Engine  # noqa: E402
from retrieval.runtimes import create_runtime_extractor
from retrieval.extractors import Extractor, ExtractorConfig  # noqa: E402
from retrieval.options import EngineOptions  # noqa: E402
from retrieval.runtimes.choice import probe_batch  # noqa: E402
from retrieval.runtimes.openvino_runtime import native_bf16  # noqa: E402
from retrieval.runtimes.quantize import Calibration  # noqa: E402
from retrieval.runtimes.session import installed  # noqa: E402
from retrieval.runtimes.threads import available_cores  # noqa: E402


PARTS = ("model", "threads", "batch", "e2e", "query", "quality")


def _mode(name: str) -> tuple[str, str]:
    """(runtime, precision) of a mode: a runtime's name, or openvino-bf16 / openvino-int8."""
    runtime, _, precision = name.partition("-")
    return runtime, precision or "auto"


def build(name: str, config: ExtractorConfig, calibration: Calibration | None) -> Extractor:
    """The extractor of mode `name` (int8 quantised on `calibration`)."""
    runtime, precision = _mode(name)
    return create_runtime_extractor(config, "cpu", precision, runtime=runtime,
                                    calibration=calibration if precision == "int8" else None)


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


def with_threads(runtime: str, config: ExtractorConfig, threads: int, calibration: Calibration | None) -> Extractor:
    os.environ["RETRIEVE_THREADS"] = str(threads)
    try:
        return build(runtime, config, calibration)
    finally:
        del os.environ["RETRIEVE_THREADS"]


def end_to_end(extractor: Extractor, folder: Path, workers: int, batch: int) -> float:
    """images/s of Engine.add on every file of `folder` into a new index (model warm)."""
    paths = sorted(folder.iterdir())
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp, \
            Engine.create(Path(tmp) / "bundle", extractor,
                          options=EngineOptions(device="cpu", workers=workers, batch_size=batch)) as engine:
        start = time.perf_counter()
        report = engine.add(paths)
        seconds = time.perf_counter() - start
    assert not report.failed, report.failed[:3]
    return len(paths) / seconds


def e2e_alone(mode: str, workers: int, args: argparse.Namespace) -> dict[str, float]:
    """Mode `mode`'s end to end at `workers` decode workers, then its model alone, in a
    process of its own: the other modes' thread pools (OpenVINO keeps one per
    compiled model) would otherwise compete with this one's, as they never do in `retrieve
    index`. Runs this script with --e2e-child."""
    command = [sys.executable, __file__, "--e2e-child", f"{mode}:{workers}", "--count", str(args.count),
               "--batch", str(args.batch), "--rounds", str(args.rounds), "--int8", str(args.int8),
               "--source", str(args.source)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def e2e_child(spec: str, config: ExtractorConfig, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """The child's measurement (see :func:`e2e_alone`): end to end first, as in a fresh
    `retrieve index`, then the model alone twice. Not the other way round: the model's
    timing makes its probe canvases with PyTorch, whose idle OpenMP threads then cost a graph
    runtime's end to end ~10% (80.8 against 73.2 images/s for OpenVINO in one process), which
    `retrieve index` never pays (it runs no PyTorch op beside a graph runtime)."""
    mode, workers = spec.rsplit(":", 1)
    extractor = build(mode, config, calibration_of(args, config) if mode.endswith("-int8") else None)
    rate = end_to_end(extractor, folder, int(workers), args.batch)
    runs = [model_speed({mode: extractor}, args.batch, args.rounds)[mode]["images_per_s"] for _ in range(2)]
    return {"images_per_s": rate, "model_images_per_s": sum(runs) / 2, "model_runs": runs}


def median_run(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The run whose end to end / model-only ratio is the median of `runs`, with every
    run's ratio (one run's ratio varies by about +-6% on a shared 2-core machine)."""
    ratios = [r["images_per_s"] / r["model_images_per_s"] for r in runs]
    middle = sorted(range(len(runs)), key=ratios.__getitem__)[len(runs) // 2]
    return {**runs[middle], "ratios": ratios}


def calibration_of(args: argparse.Namespace, config: ExtractorConfig) -> Calibration:
    """The int8 mode's calibration: the first --int8 Caltech-101 train photos."""
    preprocess = create_runtime_extractor(config, "cpu", "fp32", runtime="torch").manifest.preprocessor()
    photos = (Image.open(p).convert("RGB") for p in split_files(args.source, "train"))
    return Calibration.of(preprocess, photos, args.int8)


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


def quality(extractors: dict[str, Extractor], paths: list[Path], batch: int) -> dict[str, dict[str, float]]:
    """Leave-one-out mAP (relevant: same Caltech-101 category) of `paths` embedded by each
    mode's extractor (the canvases made once, by the manifest's own preprocessing), and each
    mode's lowest and mean cosine with "torch"'s vectors of them."""
    from retrieval.evaluation.metrics import evaluate

    preprocess = next(iter(extractors.values())).manifest.preprocessor()
    canvases = [preprocess(Image.open(p).convert("RGB")) for p in paths]
    labels, ids = [p.parent.name for p in paths], list(range(len(paths)))
    vectors = {name: np.concatenate([ex.embed_adaptive(*ex.batch_inputs(
        np.stack([c[0] for c in canvases[i:i + batch]]), np.array([c[1] for c in canvases[i:i + batch]], np.int64),
        np.array([c[2] for c in canvases[i:i + batch]], np.int64))) for i in range(0, len(canvases), batch)])
        for name, ex in extractors.items()}
    return {name: {"map": evaluate(v, labels, v, labels, query_ids=ids, gallery_ids=ids).map,
                   "min_cosine": float((v * vectors["torch"]).sum(1).min()),
                   "mean_cosine": float((v * vectors["torch"]).sum(1).mean())} for name, v in vectors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="JPEGs indexed end to end per runtime")
    parser.add_argument("--repeats", type=int, default=3,
                        help="end-to-end runs per runtime and worker count (the median ratio is reported)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed model batches per runtime")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--source", type=Path, default=DATA)
    parser.add_argument("--quality", type=int, default=400, metavar="N",
                        help="Caltech-101 test images for each runtime's leave-one-out mAP (0: skip)")
    parser.add_argument("--int8", type=int, default=200, metavar="N",
                        help="Caltech-101 train photos the openvino-int8 mode is calibrated on (0: no int8 mode)")
    parser.add_argument("--parts", type=lambda text: text.split(","), default=list(PARTS),
                        help=f"comma-separated, of: {','.join(PARTS)} (default all)")
    parser.add_argument("--e2e-child", metavar="MODE:WORKERS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cores = available_cores()
    if args.e2e_child:  # one mode's end to end, in a process of its own (see e2e_alone)
        folder = build_set("images", split_files(args.source, "train"), args.count, max(1, cores))
        print(json.dumps(e2e_child(args.e2e_child, ExtractorConfig(), folder, args)))
        return

    load_start = os.getloadavg()[0]
    config = ExtractorConfig()
    exact = ["torch", *(name for name in ("onnx", "openvino") if installed(name))]
    reduced = [*(["openvino-bf16"] if installed("openvino") and native_bf16() else []),
               *(["openvino-int8"] if installed("openvino") and args.int8 else [])]
    runtimes = [*exact, *reduced]
    calibration = calibration_of(args, config) if args.int8 else None
    extractors = {name: build(name, config, calibration) for name in runtimes}
    out: dict[str, Any] = {"cores": cores, "batch": args.batch, "load_start": load_start,
                           "int8_calibration_images": args.int8}
    before = model_speed(extractors, args.batch, args.rounds)
    fastest = max(exact[1:] or ["torch"], key=lambda n: before[n]["images_per_s"])  # what auto picks: float32
    if "threads" in args.parts:
        by_threads = {f"{name}-{threads}": with_threads(name, config, threads, calibration)
                      for name in runtimes[1:] for threads in sorted({1, cores})}
        out["threads"] = {key: m["images_per_s"] for key, m in model_speed(by_threads, args.batch, args.rounds).items()}
    if "batch" in args.parts:
        out["batch_sizes"] = {str(b): model_speed({fastest: extractors[fastest]}, b, args.rounds)[fastest][
            "images_per_s"] for b in (1, 8, 32)}
    folder = build_set("images", split_files(args.source, "train"), args.count, max(1, cores)) \
        if {"e2e", "query"} & set(args.parts) else None
    if "e2e" in args.parts and folder is not None:
        settings = [(name, w) for name in runtimes for w in sorted({1, cores})]
        runs: dict[str, list[dict[str, float]]] = {f"{name}-w{w}": [] for name, w in settings}
        for _ in range(args.repeats):  # round-robin, so that a change of load falls on every mode alike
            for name, w in settings:
                runs[f"{name}-w{w}"].append(e2e_alone(name, w, args))
        out["e2e"] = {key: median_run(r) for key, r in runs.items()}
    after = model_speed(extractors, args.batch, args.rounds)
    out["model"] = {name: {"images_per_s": (before[name]["images_per_s"] + after[name]["images_per_s"]) / 2,
                           "before": before[name]["images_per_s"], "after": after[name]["images_per_s"],
                           "min_cosine": min(before[name]["min_cosine"], after[name]["min_cosine"])}
                    for name in runtimes}
    if "query" in args.parts and folder is not None:
        queries = split_files(args.source, "test")[: args.queries]
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            bundle = Path(tmp) / "bundle"
            with Engine.create(bundle, options=EngineOptions(device="cpu", runtime=fastest)) as engine:
                engine.add(sorted(folder.iterdir())[:100])
            out["query"] = {name: query_latency(name, bundle, queries) for name in [*exact, "auto"]}  # a float32 index
            out["cold_query_s"] = {name: cold_query(name, bundle, queries[0]) for name in [*exact, "auto"]}
    if "quality" in args.parts and args.quality:
        out["quality"] = quality(extractors, split_files(args.source, "test")[: args.quality], args.batch)
    out["load_end"] = os.getloadavg()[0]
    path = CACHE / f"bench_runtime-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    report(out, args.batch, fastest, args.quality)
    print(f"written to {path}")


def report(out: dict[str, Any], batch: int, fastest: str, quality_images: int) -> None:
    """The measurements in `out` as a table on stdout."""
    torch_speed = out["model"]["torch"]["images_per_s"]
    print(f"model only, batch {batch}, {out['cores']} cores (load {out['load_start']:.1f} -> {out['load_end']:.1f}):")
    for name, m in out["model"].items():
        print(f"  {name:13s} {m['images_per_s']:6.1f} images/s ({m['before']:.1f} before, {m['after']:.1f} after)  "
              f"{m['images_per_s'] / torch_speed:4.2f}x  min cosine {m['min_cosine']:.6f}")
    if "threads" in out:
        print("threads:", {k: round(v, 1) for k, v in out["threads"].items()})
    if "batch_sizes" in out:
        print(f"batch sizes ({fastest}):", {k: round(v, 1) for k, v in out["batch_sizes"].items()})
    for key, e in out.get("e2e", {}).items():
        speed, model = e["images_per_s"], e["model_images_per_s"]
        ratios = e.get("ratios", [speed / model])
        print(f"  e2e {key:18s} {speed:6.1f} images/s = {speed / model:4.2f} x its model-only "
              f"({model:.1f} images/s in the same process; median of {len(ratios)}: "
              f"{min(ratios):.2f}-{max(ratios):.2f})")
    for name, q in out.get("query", {}).items():
        print(f"  query {name:9s} p50 {q['p50_ms']:.1f} ms  p99 {q['p99_ms']:.1f} ms  cold {out['cold_query_s'][name]:.2f} s")
    if "quality" in out:
        print(f"Caltech-101, first {quality_images} test images, leave-one-out:")
        for name, q in out["quality"].items():
            print(f"  {name:13s} mAP {q['map']:.4f}  cosine with torch: lowest {q['min_cosine']:.4f}, "
                  f"mean {q['mean_cosine']:.4f}")


if __name__ == "__main__":
    main()
