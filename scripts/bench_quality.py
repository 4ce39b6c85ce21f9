"""Retrieval quality of the default extractor on the Caltech-101 test split.

Every test image is queried against the rest of the split (leave-one-out); relevant =
same category. Each configuration is indexed end to end through the Engine (decode,
letterbox, embed, catalog), so images/s is what `retrieve index` delivers. The first
row reproduces the plain reference script (224x224 squashed, GeM) for comparison;
speeds are also given as a ratio to it, measured in the same run.

    .venv/bin/python scripts/bench_quality.py                 # full test split, ~10 min on 2 CPU cores
    .venv/bin/python scripts/bench_quality.py --limit 300     # quick look
    .venv/bin/python scripts/bench_quality.py --whiten \
        --config 'GeM={}' --config 'R-MAC={"pooling": "rmac"}' --config 'multi-scale={"scales": [1, 0.7071, 0.5]}'

`--config NAME=JSON` (repeatable) measures ExtractorConfig fields of your own instead of
the rows above; `--whiten` adds, for each, a row whitened with a whitening learned on the
indexed split itself (what `retrieve reindex --whiten` learns from).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from retrieval import Engine, ExtractorConfig
from retrieval.errors import RetrievalError
from retrieval.options import EngineOptions
from retrieval.evaluation.metrics import evaluate
from retrieval.extractors.whitening import learn_whitening

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "caltech101"

CONFIGS = {
    "reference: squash 224, GeM": ExtractorConfig(resize="squash", image_size=224),
    "default: letterbox 288, GeM": ExtractorConfig(),
    "letterbox 288, average": ExtractorConfig(pooling="avg"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", default="test.txt")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images of the split")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    ap.add_argument("--config", action="append", type=named_config, metavar="NAME=JSON",
                    help="an extractor to measure instead of the built-in rows (ExtractorConfig fields as JSON)")
    ap.add_argument("--whiten", action="store_true", help="also each extractor whitened (learned on the split)")
    args = ap.parse_args()
    configs = dict(args.config) if args.config else CONFIGS

    rel = (args.data / args.split).read_text().split()[: args.limit]
    paths = [str(args.data / "images" / r) for r in rel]
    labels = [r.split("/")[0] for r in rel]
    rows = []
    for name, config in configs.items():
        with tempfile.TemporaryDirectory() as tmp, \
                Engine.create(Path(tmp) / "bundle", config, options=EngineOptions(
                    device=args.device, batch_size=args.batch_size, workers=args.workers)) as engine:
            report = engine.add(paths)
            by_path = engine.catalog.rows_by_path(paths)
            ids = [by_path[p].id for p in paths]
            vectors = engine.vectors(ids)
        variants = {name: vectors}
        if args.whiten:
            variants[f"{name} + whitening"] = learn_whitening(vectors).apply(vectors)
        for label, vecs in variants.items():
            scores = evaluate(vecs, labels, vecs, labels, ks=(10,), query_ids=ids, gallery_ids=ids)
            rows.append({"config": label, "mAP": round(scores.map, 4), "P@10": round(scores.precision_at[10], 4),
                         "images_per_s": round(report.images_per_second, 1), "images": len(paths),
                         "failed": len(report.failed)})
            print(f"{label}: mAP {scores.map:.4f}, P@10 {scores.precision_at[10]:.4f}, "
                  f"{report.images_per_second:.1f} images/s", file=sys.stderr)
    base = rows[0]["images_per_s"] or 1.0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    if args.json:
        print(json.dumps({"device": device, "rows": rows}))
        return
    print(f"Caltech-101 {args.split}, {len(paths)} images, leave-one-out; device: {device}\n")
    print("| extractor | mAP | P@10 | images/s | speed vs first row |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['mAP']:.4f} | {r['P@10']:.4f} | {r['images_per_s']:.1f} "
              f"| {r['images_per_s'] / base:.2f}x |")


def named_config(text: str) -> tuple[str, ExtractorConfig]:
    """``NAME=JSON`` on the command line -> (NAME, the ExtractorConfig of those fields)."""
    name, sep, fields = text.partition("=")
    try:
        if not (sep and name):
            raise ValueError("expected NAME=JSON")
        return name, ExtractorConfig(**json.loads(fields))
    except (ValueError, TypeError, RetrievalError) as e:
        raise argparse.ArgumentTypeError(f"--config {text!r}: {e}") from None


if __name__ == "__main__":
    main()
