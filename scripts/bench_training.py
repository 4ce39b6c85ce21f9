"""Training results on Caltech-101: triplet fine-tuning, denoising, autoencoder codes.

Trains only on the train split (train.txt; validation for per-epoch mAP is carved out of
it, 10% of each class) and evaluates only on the test split (test.txt), every test image
queried against the other 2,892 (leave-one-out), relevant = same category:

1. the triplet fine-tuned extractor against the off-the-shelf default;
2. noisy queries (Gaussian sigma 0.1 and 0.2 on 0-to-1 pixels, 5% salt-and-pepper), a
   fixed subset of test images corrupted and searched against the clean test gallery:
   embedded as they are, and denoised by the autoencoder first;
3. the autoencoder's own code as an extractor.

    .venv/bin/python scripts/bench_training.py                # CPU setting: under 1 h on 2 cores
    .venv/bin/python scripts/bench_training.py --gpu          # the larger setting, for a GPU
    .venv/bin/python scripts/bench_training.py --classes 10   # quick look at 10 classes

Writes the checkpoints under --work, a markdown report on stdout and JSON to --json-out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from retrieval import Engine, ExtractorConfig
from retrieval.options import EngineOptions
from retrieval.evaluation.metrics import evaluate
from retrieval.extractors import create_extractor
from retrieval.extractors.denoise import Denoiser, DenoisingExtractor
from retrieval.images.decode import load_image
from retrieval.training.autoencoder import AutoencoderSettings, train_autoencoder
from retrieval.training.corruptions import corrupt_image
from retrieval.evaluation.labels import LabelledImages
from retrieval.training.loop import EpochRecord, TrainResult
from retrieval.training.triplet import TripletSettings, train_triplet

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "caltech101"
BENCH = ROOT / "bench-data"
DEFAULT_CACHE = BENCH / "caltech101_lite0_embeddings.npz"  # test vectors another benchmark may have made

# The CPU setting trains the last block group and the head convolution of Lite0 on cached
# views at 224 px; the GPU setting fine-tunes six of nine stages on fresh views at 288 px.
SETTINGS = {
    "cpu": (TripletSettings(epochs=8, image_size=224, embed_size=288, frozen_stages=7, cache_views=3),
            AutoencoderSettings(epochs=6, steps_per_epoch=150, width=16, patch=96, max_images=1500)),
    "gpu": (TripletSettings(epochs=25, image_size=288, embed_size=288, frozen_stages=3, cache_views=0,
                            classes_per_batch=32),
            AutoencoderSettings(epochs=20, steps_per_epoch=400, width=32, patch=128, batch_size=64,
                                max_images=6000)),
}
NOISE = [("gaussian", 0.1, "Gaussian noise, sigma 0.1"), ("gaussian", 0.2, "Gaussian noise, sigma 0.2"),
         ("salt_pepper", 0.05, "salt-and-pepper, 5% of pixels")]


def split(name: str, classes: int | None) -> LabelledImages:
    rel = (DATA / name).read_text().split()
    keep = sorted({r.split("/")[0] for r in rel})[:classes]
    rel = [r for r in rel if r.split("/")[0] in keep]
    return LabelledImages(tuple(str(DATA / "images" / r) for r in rel), tuple(r.split("/")[0] for r in rel))


def loo(vectors: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    ids = list(range(len(labels)))
    s = evaluate(vectors, labels, vectors, labels, ks=(10,), query_ids=ids, gallery_ids=ids)
    return {"mAP": round(s.map, 4), "P@10": round(s.precision_at[10], 4)}


def index_vectors(extractor: object, test: LabelledImages, device: str) -> tuple[np.ndarray, float]:
    """Test-split vectors through the Engine, as `retrieve index` makes them; and seconds."""
    start = time.perf_counter()
    options = EngineOptions(device=device)
    with tempfile.TemporaryDirectory() as tmp, Engine.create(Path(tmp) / "b", extractor, options=options) as engine:
        engine.add(test.paths)
        rows = engine.catalog.rows_by_path(test.paths)
        vecs = engine.vectors([rows[p].id for p in test.paths])
    return vecs, time.perf_counter() - start


def timed(train: Callable[[], TrainResult] | None) -> tuple[TrainResult | None, float | None]:
    """Run a trainer (None: --reuse) and time all of it: loading images and caching the
    frozen part count, not only the epochs."""
    if train is None:
        return None, None
    start = time.perf_counter()
    return train(), time.perf_counter() - start


def trained(run: TrainResult | None, wall_s: float | None, out: Path) -> dict[str, object]:
    """Epochs, scores and times of a run (or of the checkpoint already in `out`)."""
    if run is None:
        run_dict = json.loads((out / "config.json").read_text())["training"]
    else:
        run_dict = run.to_dict()
    return {**{k: run_dict[k] for k in ("epochs", "best_epoch", "best_score", "initial_score", "seconds")},
            "wall_s": wall_s and round(wall_s, 1)}


def log_epoch(what: str):  # noqa: ANN201
    def show(r: EpochRecord) -> None:
        print(f"{what} epoch {r.epoch}: loss {r.loss:.4f}, validation {r.score:.4f}, {r.seconds:.0f} s",
              file=sys.stderr, flush=True)
    return show


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the larger setting (default when CUDA is visible)")
    ap.add_argument("--cpu", action="store_true", help="the CPU setting even when a GPU is visible")
    ap.add_argument("--classes", type=int, default=None, help="only the first N classes (a quick look)")
    ap.add_argument("--noisy-queries", type=int, default=500, help="test images corrupted as queries")
    ap.add_argument("--work", type=Path, default=BENCH / "training")
    ap.add_argument("--reuse", action="store_true", help="evaluate checkpoints already in --work, do not train")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    setting = "gpu" if args.gpu or (torch.cuda.is_available() and not args.cpu) else "cpu"
    device = "cuda" if setting == "gpu" else "cpu"
    triplet_settings, ae_settings = SETTINGS[setting]
    triplet_settings, ae_settings = replace(triplet_settings, device=device), replace(ae_settings, device=device)
    started = time.perf_counter()
    train, test = split("train.txt", args.classes), split("test.txt", args.classes)
    print(f"{setting} setting: {len(train)} train images, {len(test)} test images, "
          f"{len(set(test.labels))} classes", file=sys.stderr)

    # 1. the off-the-shelf default, then the triplet fine-tuned extractor
    if DEFAULT_CACHE.exists() and args.classes is None:
        default_vecs, default_s = np.load(DEFAULT_CACHE)["queries"], None
    else:
        default_vecs, default_s = index_vectors(ExtractorConfig(), test, device)
    rows = [{"extractor": "off-the-shelf default (Lite0, GeM, 288 letterbox)", **loo(default_vecs, test.labels),
             "dim": int(default_vecs.shape[1]), "index_s": default_s and round(default_s, 1)}]
    triplet_dir = args.work / "triplet"
    run, wall = timed(None if args.reuse else lambda: train_triplet(train, triplet_dir, triplet_settings,
                                                                    on_epoch=log_epoch("triplet")))
    vecs, secs = index_vectors(triplet_dir, test, device)
    rows.append({"extractor": "triplet fine-tuned", **loo(vecs, test.labels), "dim": int(vecs.shape[1]),
                 "index_s": round(secs, 1), "training": trained(run, wall, triplet_dir)})
    print(f"triplet: {rows[-1]}", file=sys.stderr)

    # 2. the autoencoder: denoising noisy queries, and its code as an extractor
    ae_dir = args.work / "autoencoder"
    ae_run, ae_wall = timed(None if args.reuse else lambda: train_autoencoder(list(train.paths), ae_dir, ae_settings,
                                                                              on_epoch=log_epoch("autoencoder")))
    vecs, secs = index_vectors(ae_dir, test, device)
    rows.append({"extractor": "autoencoder code (GeM over the bottleneck)", **loo(vecs, test.labels),
                 "dim": int(vecs.shape[1]), "index_s": round(secs, 1), "training": trained(ae_run, ae_wall, ae_dir)})
    noisy = noisy_queries(test, default_vecs, ae_dir, device, args.noisy_queries)

    result = {"setting": setting, "machine": machine(device), "train_images": len(train),
              "test_images": len(test), "extractors": rows, "noisy_queries": noisy,
              "triplet_settings": asdict(triplet_settings), "autoencoder_settings": asdict(ae_settings),
              "wall_s": round(time.perf_counter() - started, 1)}
    report(result)
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2))


def noisy_queries(test: LabelledImages, gallery: np.ndarray, ae_dir: Path, device: str, n: int) -> list[dict]:
    """mAP of corrupted test queries against the clean test gallery: as they are, and denoised."""
    extractor = create_extractor(ExtractorConfig(), device)
    cleaning = DenoisingExtractor(extractor, Denoiser(ae_dir, device))
    pick = np.random.default_rng(0).choice(len(test), size=min(n, len(test)), replace=False)
    pick.sort()
    labels = [test.labels[i] for i in pick]
    ids = pick.tolist()
    out = []
    clean = evaluate(gallery[pick], labels, gallery, test.labels, ks=(10,), query_ids=ids,
                     gallery_ids=list(range(len(test)))).map
    for kind, level, name in NOISE:
        start = time.perf_counter()
        got: dict[str, list[np.ndarray]] = {"noisy": [], "denoised": []}
        for chunk in range(0, len(pick), 32):
            images = [corrupt_image(load_image(test.paths[i]).image, kind, level, seed=int(i))
                      for i in pick[chunk:chunk + 32]]
            got["noisy"].append(extractor.embed_images(images))
            got["denoised"].append(cleaning.embed_images(images))
        scores = {k: round(evaluate(np.concatenate(v), labels, gallery, test.labels, ks=(10,), query_ids=ids,
                                    gallery_ids=list(range(len(test)))).map, 4) for k, v in got.items()}
        out.append({"corruption": name, "kind": kind, "level": level, "queries": len(pick),
                    "clean": round(clean, 4), **scores, "seconds": round(time.perf_counter() - start, 1)})
        print(f"noisy queries: {out[-1]}", file=sys.stderr, flush=True)
    return out


def machine(device: str) -> dict[str, object]:
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def report(r: dict) -> None:
    m = r["machine"]
    print(f"Caltech-101: trained on {r['train_images']} train-split images (10% of each class held out for "
          f"validation), evaluated on the {r['test_images']} test-split images, each queried against the rest.\n"
          f"Machine: {m['device']}, {m['processor']}, {m['cores']} cores, torch {m['torch']}; "
          f"{r['setting']} setting; whole run {r['wall_s'] / 60:.1f} min.\n")
    print("| extractor | test mAP | P@10 | dim | epochs (best) | training: epochs | training: all |")
    print("|---|---|---|---|---|---|---|")
    for row in r["extractors"]:
        t = row.get("training")
        epochs = f"{t['epochs']} ({t['best_epoch']})" if t else "-"
        wall = f"{t['seconds'] / 60:.1f} min" if t else "-"
        whole = f"{t['wall_s'] / 60:.1f} min" if t and t.get("wall_s") else "-"
        print(f"| {row['extractor']} | {row['mAP']:.4f} | {row['P@10']:.4f} | {row['dim']} | {epochs} | {wall} "
              f"| {whole} |")
    print("\n(training: all = loading the images and caching the frozen part, plus the epochs.)")
    n = r["noisy_queries"][0]["queries"] if r["noisy_queries"] else 0
    print(f"\nNoisy queries: {n} test images, corrupted, against the clean test gallery (default extractor):\n")
    print("| corruption | clean query mAP | noisy, embedded directly | denoised, then embedded | drop won back |")
    print("|---|---|---|---|---|")
    for q in r["noisy_queries"]:
        drop = q["clean"] - q["noisy"]
        back = (q["denoised"] - q["noisy"]) / drop if drop > 0 else float("nan")
        print(f"| {q['corruption']} | {q['clean']:.4f} | {q['noisy']:.4f} | {q['denoised']:.4f} | {back:.0%} |")


if __name__ == "__main__":
    main()
