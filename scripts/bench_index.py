"""Indexing throughput and query latency: how close `retrieve index` comes to the model alone.

One run, one image set, three throughputs, all with the same extractor, batch size and
image size:

  model   the extractor's embed on synthetic uint8 canvases already on the device: the
          ceiling the pipeline can reach. Timed before and after e2e, averaged.
  e2e     Engine.create + Engine.index from the JPEG files into a new index (discovery,
          hashing, decoding, resizing, embedding, catalog and ANN writes), from the run's
          wall time; the model is already loaded.
  naive   the plain loop: PIL open, torchvision Resize + CenterCrop + ToTensor + Normalize,
          the model in float32, faiss IndexFlatIP.add; batch 32, no workers.

Then single-image query latency, p50 and p99 (Engine.search on an image file that is not
in the index, warm model), beside the model's own single-image forward time, and the model
load time, reported apart. The 1-minute load average at the start and the end is recorded:
other busy processes on the machine slow everything here, single-image queries most.

The images are JPEGs around 500x375 made from Caltech-101 train photos (resized, and for
counts above the split's 5,784 also cropped and mirrored, so every file is distinct and
none is skipped as a duplicate). They are built once in bench-data/ and reused.

    .venv/bin/python scripts/bench_index.py --count 600          # this 2-core CPU, ~3 min
    python scripts/bench_index.py --device cuda --batch-size 256 --count 20000    # a GPU

Targets: on a CPU e2e >= 0.8 x model; on a GPU e2e >= 0.6 x model (batch >= 256) and
>= 5 x naive. Results print as a table (or JSON with --json) and are written to
bench-data/bench_index-<device>-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torchvision import transforms

from retrieval import Engine
from retrieval.images.batches import default_workers
from retrieval.indexing.run import IndexReport
from retrieval.options import EngineOptions
from retrieval.images.decode import load_image
from retrieval.extractors import Extractor, ExtractorConfig, create_extractor
from retrieval.extractors.backbones import create_trunk
from retrieval.extractors.pooling import create_pooling

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "caltech101"
CACHE = ROOT / "bench-data"
LONG_SIDE = 500  # 500x375 for a 4:3 photo: a typical web image
NAIVE_BATCH = 32


# ---------------------------------------------------------------- the image set


def _make_jpeg(job: tuple[Path, Path, int, int]) -> None:
    """Write bench image `number`: the source resized to LONG_SIDE; on later passes over the
    split (`round` > 0) a random crop first, mirrored every other pass."""
    src, dst, number, round_ = job
    if dst.exists():
        return
    with Image.open(src) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    if round_:
        rng = np.random.default_rng(number)
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.75, 0.95)), int(h * rng.uniform(0.75, 0.95))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x, y, x + cw, y + ch))
        if round_ % 2:
            img = ImageOps.mirror(img)
    scale = LONG_SIDE / max(img.size)
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    tmp = dst.with_suffix(".part")
    img.save(tmp, "JPEG", quality=90)
    os.replace(tmp, dst)  # an interrupted build leaves no half-written image behind


def build_set(name: str, sources: list[Path], count: int, workers: int) -> Path:
    """A folder holding exactly `count` bench images (hard links into one shared pool).

    The pool (bench-data/<name>-pool) grows as needed and is never rebuilt; image i is
    always made from the same source the same way, so every count shares its files.
    """
    pool = CACHE / f"{name}-pool"
    pool.mkdir(parents=True, exist_ok=True)
    jobs = [(sources[i % len(sources)], pool / f"{i:06d}.jpg", i, i // len(sources)) for i in range(count)]
    todo = [j for j in jobs if not j[1].exists()]
    if todo:
        print(f"building {len(todo)} {name} images in {pool} ...", file=sys.stderr)
        with ProcessPoolExecutor(workers) as ex:
            list(ex.map(_make_jpeg, todo, chunksize=64))
    folder = CACHE / f"{name}-{count}"
    if not folder.is_dir() or sum(1 for _ in folder.iterdir()) != count:
        folder.mkdir(exist_ok=True)
        for _, path, _, _ in jobs:
            link = folder / path.name
            if not link.exists():
                try:
                    os.link(path, link)
                except OSError:  # another filesystem: a copy does as well
                    link.write_bytes(path.read_bytes())
    return folder


def split_files(source: Path, split: str) -> list[Path]:
    listing = source / f"{split}.txt"
    if not listing.is_file():
        sys.exit(f"error: {listing} not found; point --source at a Caltech-101 folder (images/, train.txt, test.txt)")
    return [source / "images" / r for r in listing.read_text().split()]


# ---------------------------------------------------------------- measurements


def measure_model(extractor: Extractor, batch_size: int, min_seconds: float) -> float:
    """images/s of embed alone, on random uint8 canvases already on the device."""
    size = extractor.manifest.config.image_size
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8, generator=gen)
    pixels = pixels.to(extractor.device)
    heights = torch.full((batch_size,), size * 3 // 4)  # a 4:3 photo, letterboxed
    widths = torch.full((batch_size,), size)
    for _ in range(2):  # warm-up: cuDNN autotuning, allocator, caches
        extractor.embed(pixels, heights, widths)
    done, start = 0, time.perf_counter()
    while done < 3 * batch_size or time.perf_counter() - start < min_seconds:
        extractor.embed(pixels, heights, widths)  # returns host numpy: the device has finished
        done += batch_size
    return done / (time.perf_counter() - start)


def measure_e2e(extractor: Extractor, folder: Path, index_dir: Path, args: argparse.Namespace,
                ) -> tuple[float, Engine, IndexReport]:
    """images/s of Engine.create + Engine.index on the folder, wall time; the engine stays
    open; the report says where the time went (its stages)."""
    start = time.perf_counter()
    engine = Engine.create(index_dir, extractor, options=EngineOptions(
        device=str(extractor.device), batch_size=args.batch_size, workers=args.workers, decode=args.decode))
    report = engine.index([folder])
    seconds = time.perf_counter() - start
    if report.failed or report.embedded != args.count:
        sys.exit(f"error: e2e run embedded {report.embedded} of {args.count}, failed {report.failed[:3]}")
    return report.embedded / seconds, engine, report


def measure_naive(config: ExtractorConfig, device: torch.device, files: list[Path]) -> float:
    """images/s of the plain loop a first script would use, model built beforehand."""
    trunk = create_trunk(config.backbone, config.weights)
    model = trunk.module.to(device).eval()
    pooling = create_pooling(config.pooling, config.pooling_params).to(device)
    tf = transforms.Compose([
        transforms.Resize(config.image_size), transforms.CenterCrop(config.image_size),
        transforms.ToTensor(), transforms.Normalize(trunk.mean, trunk.std),
    ])
    index = faiss.IndexFlatIP(trunk.dim)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(files), NAIVE_BATCH):
            x = torch.stack([tf(Image.open(p).convert("RGB")) for p in files[i:i + NAIVE_BATCH]]).to(device)
            fmap = model(x)
            desc = F.normalize(pooling(fmap, torch.ones_like(fmap[:, :1])), dim=1)
            index.add(desc.cpu().numpy())
    seconds = time.perf_counter() - start
    assert index.ntotal == len(files)
    return len(files) / seconds


def measure_queries(engine: Engine, queries: list[Path]) -> dict[str, float]:
    """Per-query wall times of Engine.search on a file outside the index, model warm,
    and the model's own share: one forward pass on one canvas already on the device.

    A query costs decoding and preprocessing, one forward pass at batch 1, the ANN search
    and the catalog look-ups; the difference between the two p50s is everything but the
    model. On a CPU shared with other busy processes, a forward pass spread over every
    core's thread can take ten times its usual time while threads wait for each other
    (the load average, recorded beside, shows when that is happening).
    """
    extractor = engine.extractor
    engine.search(str(queries[0]), k=10)  # warm-up: the ANN index, the model's first call
    times = []
    for q in queries:
        start = time.perf_counter()
        hits = engine.search(str(q), k=10)
        times.append(time.perf_counter() - start)
        assert len(hits) == 10
    assert engine.extractor is extractor, "the model was rebuilt between queries"
    pixels, h, w = extractor.preprocessor(load_image(queries[0]).image)
    canvas = torch.from_numpy(pixels[None]).to(extractor.device)
    heights, widths = torch.tensor([h]), torch.tensor([w])
    extractor.embed(canvas, heights, widths)
    forward = []
    for _ in queries:
        start = time.perf_counter()
        extractor.embed(canvas, heights, widths)  # returns host numpy: the device has finished
        forward.append(time.perf_counter() - start)
    ms, model_ms = np.array(times) * 1000, np.array(forward) * 1000
    return {"query_p50_ms": float(np.percentile(ms, 50)), "query_p99_ms": float(np.percentile(ms, 99)),
            "query_model_p50_ms": float(np.percentile(model_ms, 50)),
            "query_model_p99_ms": float(np.percentile(model_ms, 99)), "queries": len(ms)}


def check_graphs(extractor: Extractor, files: list[Path], batch_size: int, min_seconds: float) -> dict[str, float]:
    """On a GPU: the model alone without CUDA graphs (the eager forward), and the lowest
    cosine between graph and eager vectors of the same real photos (one batch of them)."""
    graphs = extractor.graphs  # type: ignore[attr-defined]
    prepared = [extractor.preprocessor(load_image(f).image) for f in files[:batch_size]]
    pixels = torch.from_numpy(np.stack([p[0] for p in prepared]))
    heights, widths = torch.tensor([p[1] for p in prepared]), torch.tensor([p[2] for p in prepared])
    graphs.enable(False)
    eager = extractor.embed(pixels, heights, widths)
    eager_rate = measure_model(extractor, batch_size, min_seconds)
    graphs.enable()
    for _ in range(3):  # seen, captured, replayed
        replayed = extractor.embed(pixels, heights, widths)
    if not graphs.enabled:
        sys.exit("error: CUDA graph capture failed (see the warning above)")
    return {"model_eager_images_per_s": round(eager_rate, 2),
            "graphs_min_cosine": round(float((eager * replayed).sum(1).min()), 6)}


def model_load_seconds(index_dir: Path, device: torch.device) -> float:
    """What a fresh process pays once before its first query: building the extractor."""
    with Engine.open(index_dir, options=EngineOptions(device=str(device))) as engine:
        _ = engine.extractor
        return engine.load_seconds


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3000, help="images to index (GPU runs: 20000 or more)")
    ap.add_argument("--queries", type=int, default=100, help="single-image queries for the latency figures")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode workers (default: the Engine's)")
    ap.add_argument("--decode", default="auto", help="JPEG decoding: auto, cpu or device")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's, one per core); 1 on a CPU shared with busy jobs")
    ap.add_argument("--model-seconds", type=float, default=10.0, help="least time spent timing the model alone")
    ap.add_argument("--skip-naive", action="store_true", help="leave out the naive loop (slow on a CPU)")
    ap.add_argument("--naive-count", type=int, default=None,
                    help="time the naive loop on the first N images only (a rate: fewer images, same figure)")
    ap.add_argument("--source", type=Path, default=DATA, help="Caltech-101 folder (images/, train.txt, test.txt)")
    ap.add_argument("--graphs", choices=("on", "off"), default="off",
                    help="CUDA graphs for the forward on a GPU (on: also times the eager forward and "
                         "compares vectors; see retrieval/extractors/cuda_graphs.py)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]

    workers = os.cpu_count() or 1
    folder = build_set("images", split_files(args.source, "train"), args.count, workers)
    tests = split_files(args.source, "test")
    queries = sorted(build_set("queries", tests[:: max(1, len(tests) // args.queries)][: args.queries],
                               args.queries, workers).iterdir())
    files = sorted(folder.iterdir())

    start = time.perf_counter()
    extractor = create_extractor(ExtractorConfig(), args.device, args.precision)
    load_s = time.perf_counter() - start
    dev = extractor.device
    print(f"device {device_name(dev)}, batch {args.batch_size}, precision {extractor.precision}", file=sys.stderr)
    graph_check = {}
    if dev.type == "cuda" and hasattr(extractor, "graphs"):
        if args.graphs == "on":
            graph_check = check_graphs(extractor, files, args.batch_size, args.model_seconds)
            print(f"model eager  {graph_check['model_eager_images_per_s']:9.1f} images/s, graphs vs eager "
                  f"lowest cosine {graph_check['graphs_min_cosine']}", file=sys.stderr)
        extractor.graphs.enable(args.graphs == "on")

    # The model is timed before and after the end-to-end run and the two averaged, so a
    # change in what else the machine is doing shows as their spread, not as a skewed ratio.
    model_runs = [measure_model(extractor, args.batch_size, args.model_seconds)]
    print(f"model only   {model_runs[0]:9.1f} images/s", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        index_dir = Path(tmp) / "index"
        e2e, engine, report = measure_e2e(extractor, folder, index_dir, args)
        print(f"end to end   {e2e:9.1f} images/s ({report.where_the_time_went()})", file=sys.stderr)
        model_runs.append(measure_model(extractor, args.batch_size, args.model_seconds))
        print(f"model only   {model_runs[1]:9.1f} images/s (again)", file=sys.stderr)
        model = sum(model_runs) / 2
        with engine:
            latency = measure_queries(engine, queries)
            workers_used = default_workers(engine.options.workers, dev)
        load_fresh = model_load_seconds(index_dir, dev)
    naive = None if args.skip_naive else measure_naive(extractor.manifest.config, dev, files[: args.naive_count])
    if naive is not None:
        print(f"naive loop   {naive:9.1f} images/s", file=sys.stderr)

    result: dict[str, Any] = {
        "device": device_name(dev), "device_type": dev.type, "batch_size": args.batch_size,
        "precision": extractor.precision, "workers": workers_used, "decode": args.decode,
        "image_size": extractor.manifest.config.image_size, "count": args.count,
        "model_images_per_s": round(model, 2), "model_before_after": [round(m, 2) for m in model_runs],
        "e2e_images_per_s": round(e2e, 2), "e2e_stages_s": report.to_dict()["stages"], "graphs": args.graphs if dev.type == "cuda" else None, **graph_check,
        "naive_images_per_s": round(naive, 2) if naive is not None else None,
        "naive_count": None if naive is None else min(args.naive_count or args.count, args.count),
        "e2e_over_model": round(e2e / model, 3), "e2e_over_naive": round(e2e / naive, 2) if naive else None,
        **{k: round(v, 2) for k, v in latency.items()},
        "query_overhead_p50_ms": round(latency["query_p50_ms"] - latency["query_model_p50_ms"], 2),
        "model_load_s": round(load_fresh, 3), "model_load_first_s": round(load_s, 3),
        "threads": torch.get_num_threads(), "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "torch": torch.__version__, "python": platform.python_version(),
    }
    target = 0.8 if dev.type == "cpu" else 0.6
    result["target"] = f"e2e >= {target} x model" + ("" if dev.type == "cpu" else " and >= 5 x naive")
    result["target_met"] = result["e2e_over_model"] >= target and (dev.type == "cpu" or (naive or 0) * 5 <= e2e)
    out = CACHE / f"bench_index-{dev.type}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:22} {v}")
        print(f"written to {out}")


if __name__ == "__main__":
    main()
