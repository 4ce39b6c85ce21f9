"""Why decode workers pause while a CPU model runs: the same model over the same photos,
with decoding scheduled three ways, in one process, round-robin.

  before      every batch decoded first (2 workers), then embedded: the model alone on
              real batches, plus decoding on both cores.
  beside      workers decode while the model runs (a plain loader, no gate): what the
              indexer did before :class:`retrieval.images.batches.DecodeGate`.
  gated       the indexer's loop (:class:`retrieval.images.embedding.EmbedLoop`): workers
              decode only while the model waits for its next batch.

For each: wall seconds, and the process's user and kernel CPU seconds (the model's
threads; workers are other processes). Median of --repeats rounds. The model is warm, so
workers forked beside it (beside, gated) make its first write to each working buffer a
copy-on-write fault: a fresh `retrieve index` forks before the model's first batch.

    .venv/bin/python scripts/bench_overlap.py --count 1000      # ~5 min on 2 cores

Writes bench-data/bench_overlap-<time>.json; prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_index import CACHE, DATA, build_set, split_files  # noqa: E402
from bench_runtime import build  # noqa: E402

from retrieval.extractors import ExtractorConfig  # noqa: E402
from retrieval.images.batches import DecodeDataset, DecodedBatch, decode_loader  # noqa: E402
from retrieval.images.embedding import EmbedLoop  # noqa: E402
from retrieval.runtimes.threads import available_cores  # noqa: E402


def measured(run: Callable[[], None]) -> dict[str, float]:
    """Wall, user and system seconds of this process while `run` runs."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": time.perf_counter() - start, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="JPEGs (bench_index.py's image set)")
    parser.add_argument("--mode", default="openvino", help="a bench_runtime.py mode: torch, onnx, openvino, ...")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", type=Path, default=DATA)
    args = parser.parse_args()
    extractor = build(args.mode, ExtractorConfig(), None)
    folder = build_set("images", split_files(args.source, "train"), args.count, available_cores())
    paths = [str(p) for p in sorted(folder.iterdir())]
    dataset = DecodeDataset(paths, extractor.preprocessor, exif=True)

    def embed(batch: DecodedBatch) -> None:
        extractor.embed_adaptive(batch.pixels, batch.heights, batch.widths)

    def before() -> None:
        for batch in list(decode_loader(dataset, args.workers, False, args.batch)):
            embed(batch)

    def beside() -> None:
        for batch in decode_loader(dataset, args.workers, False, args.batch):
            embed(batch)

    def gated() -> None:
        EmbedLoop(paths, extractor.preprocessor, embed, batch_size=args.batch, workers=args.workers, exif=True).run()

    schedules = {"before": before, "beside": beside, "gated": gated}
    gated()  # warm-up: the graph's first batches, the files in the page cache
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in schedules}
    load_start = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, run in schedules.items():
            runs[name].append(measured(run))
    out = {"mode": args.mode, "count": len(paths), "workers": args.workers, "batch": args.batch,
           "cores": available_cores(), "load_start": load_start, "load_end": os.getloadavg()[0],
           "runs": runs, "median": {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
                                    for name, rs in runs.items()}}
    path = CACHE / f"bench_overlap-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"{args.mode}, {len(paths)} JPEGs, {args.workers} workers, {out['cores']} cores "
          f"(load {load_start:.1f} -> {out['load_end']:.1f}), median of {args.repeats}:")
    for name, m in out["median"].items():
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in runs[name])
        print(f"  {name:7s} wall {m['wall_s']:6.2f} s  user {m['user_s']:6.2f} s  sys {m['sys_s']:5.2f} s  "
              f"(wall of each run: {walls})")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
