"""Retrieval quality of the default extractor on the Caltech-101 test split.

Every test image is queried against the rest of the split (leave-one-out); relevant =
same category. Each configuration is indexed end to end through the Engine (decode,
letterbox, embed, catalog), so images/s is what `retrieve index` delivers. The first
row reproduces the plain reference script (224x224 squashed, GeM) for comparison;
speeds are also given as a ratio to it, measured in the same run.

    .venv/bin/python scripts/bench_quality.py                 # full test split, ~10 min on 2 CPU cores
    .venv/bin/python scripts/bench_quality.py --limit 300     # quick look
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
from retrieval.options import EngineOptions
from retrieval.evaluation.metrics import evaluate

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
    args = ap.parse_args()

    rel = (args.data / args.split).read_text().split()[: args.limit]
    paths = [str(args.data / "images" / r) for r in rel]
    labels = [r.split("/")[0] for r in rel]
    rows = []
    for name, config in CONFIGS.items():
        with tempfile.TemporaryDirectory() as tmp, \
                Engine.create(Path(tmp) / "bundle", config, options=EngineOptions(
                    device=args.device, batch_size=args.batch_size, workers=args.workers)) as engine:
            report = engine.add(paths)
            by_path = engine.catalog.rows_by_path(paths)
            ids = [by_path[p].id for p in paths]
            vectors = engine.vectors(ids)
            scores = evaluate(vectors, labels, vectors, labels, ks=(10,), query_ids=ids, gallery_ids=ids)
        rows.append({"config": name, "mAP": round(scores.map, 4), "P@10": round(scores.precision_at[10], 4),
                     "images_per_s": round(report.images_per_second, 1), "images": len(paths),
                     "failed": len(report.failed)})
        print(f"{name}: mAP {scores.map:.4f}, P@10 {scores.precision_at[10]:.4f}, "
              f"{report.images_per_second:.1f} images/s", file=sys.stderr)
    base = rows[0]["images_per_s"] or 1.0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    if args.json:
        print(json.dumps({"device": device, "rows": rows}))
        return
    print(f"Caltech-101 {args.split}, {len(paths)} images, leave-one-out; device: {device}\n")
    print("| extractor | mAP | P@10 | images/s | speed vs reference |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['mAP']:.4f} | {r['P@10']:.4f} | {r['images_per_s']:.1f} "
              f"| {r['images_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
