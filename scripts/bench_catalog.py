"""Catalog write throughput: the serial step of indexing, beside the model.

Indexing commits each embedded batch (rows, vectors, EXIF facts, metadata) in one writer
thread while the next batch embeds, so rows/s here caps `retrieve index` however fast the
model is: on an H100 the model alone embeds ~11,500 images/s. Measured: new rows with
vectors (a first index), then the same rows with new content (a re-index), batches of
--batch records, vectors of --dim floats; every other record carries metadata.

    .venv/bin/python scripts/bench_catalog.py
    .venv/bin/python scripts/bench_catalog.py --against /tmp/old/main   # another checkout, same run

With --against, the other tree is measured in a child process right after this one and the
ratio printed, so both numbers share the machine's state.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(count: int, batch: int, dim: int) -> dict[str, float]:
    """rows/s of Catalog.apply for new rows, then for the same rows with new content."""
    from retrieval.catalog import Catalog, FileRecord
    from retrieval.catalog.facts import PhotoFacts

    rng = np.random.default_rng(0)
    records = [FileRecord(path=f"/photos/{i:07d}.jpg", content_hash=f"{i:032x}", size=50_000 + i, mtime_ns=i,
                          width=500, height=375, format="JPEG", vector=rng.standard_normal(dim).astype(np.float32),
                          metadata={"album": i % 7} if i % 2 else None,
                          photo=PhotoFacts(camera_make="Fujifilm", taken_at="2024-05-01T10:00:00") if i % 3 else None)
               for i in range(count)]
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog(Path(tmp) / "catalog.sqlite", create=True)
        start, ids = time.perf_counter(), []
        for i in range(0, count, batch):
            ids += catalog.apply(records[i:i + batch])
        new = count / (time.perf_counter() - start)
        if len(set(ids)) != count:
            sys.exit("error: the catalog returned duplicate ids")
        for rec, image_id in zip(records, ids):
            rec.id, rec.content_hash = image_id, "f" + rec.content_hash[1:]
        start = time.perf_counter()
        for i in range(0, count, batch):
            catalog.apply(records[i:i + batch])
        updated = count / (time.perf_counter() - start)
        catalog.close()
    return {"new_rows_per_s": round(new, 1), "updated_rows_per_s": round(updated, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=1280, help="vector length (the default extractor's)")
    ap.add_argument("--against", type=Path, help="another checkout of retrieve to measure in the same run")
    ap.add_argument("--json", action="store_true", help="print only JSON on stdout")
    args = ap.parse_args()
    result: dict[str, object] = {"load_avg_1m_start": round(os.getloadavg()[0], 2),
                                 "this": measure(args.count, args.batch, args.dim)}
    if args.against:
        cmd = [sys.executable, str(args.against / "scripts" / "bench_catalog.py"), "--json",
               "--count", str(args.count), "--batch", str(args.batch), "--dim", str(args.dim)]
        env = {**os.environ, "PYTHONPATH": str(args.against)}
        other = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)["this"]
        result["against"] = other
        result["ratio"] = {k: round(v / other[k], 2) for k, v in result["this"].items()}  # type: ignore[union-attr]
    result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
