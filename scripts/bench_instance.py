"""Instance retrieval: does a phone photo of an object find that object's reference?

On each category of ../shared/data/smvs_dev (book covers, museum paintings: real phone
photos against clean references), the references are indexed through the Engine with
local features (`local_features="sift"`) and every photo is queried against its category.
Reported per category and per split of the queries: ODD file numbers are the development
split (parameters were chosen looking at them), EVEN numbers are held out (never looked at
while choosing). Rows:

- global: the global CNN ranking alone (`rerank=False`), the same whitened (`reindex --whiten`,
  learned from the category's references), and any `--global-config` extractor;
- words: the bag-of-visual-words ranking alone (the local-feature index);
- fused: both fused by reciprocal rank (the first stage's short list);
- fused + verified: the whole two-stage search (`Engine.search`, the default).

Columns: top-1, top-5, recall@50 of the first stage (the right reference in the short
list), p50 / p99 ms per query from the image file to ranked hits (single-threaded). Also the
index-time cost of local features (images/s with and without, bytes stored per image), and,
with `--caltech N`, Caltech-101 mAP (leave-one-out over the first N test images) with
re-ranking on and off: verification must not hurt category search.

    .venv/bin/python scripts/bench_instance.py                       # ~10 min on 2 CPU cores
    .venv/bin/python scripts/bench_instance.py --caltech 600         # + Caltech-101 mAP, ~15 min more
    .venv/bin/python scripts/bench_instance.py --global-config 'R-MAC={"pooling": "rmac"}'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval import Engine, ExtractorConfig
from retrieval.local import reciprocal_rank_fusion
from retrieval.options import EngineOptions
from retrieval.query import QueryBuilder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHORT = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", nargs="*", default=["book_covers", "museum_paintings"])
    parser.add_argument("--global-config", action="append", default=[], metavar="NAME=JSON",
                        help="another global extractor (ExtractorConfig fields) to measure alone")
    parser.add_argument("--caltech", type=int, default=0, metavar="N",
                        help="also Caltech-101 mAP with re-ranking on and off over the first N test images")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-query latency, as one request on a busy server sees it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_instance_") as tmp:
        for category in args.categories:
            rows += bench_category(DATA / "smvs_dev" / category, Path(tmp) / category, args.global_config)
        if args.caltech:
            rows += bench_caltech(Path(tmp) / "caltech", args.caltech)
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| category | queries | stage | top-1 | top-5 | recall@50 | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "top1" in r:
            print(f"| {r['category']} | {r['split']} ({r['n']}) | {r['stage']} | {r['top1']:.3f} | {r['top5']:.3f} "
                  f"| {r['recall50']:.3f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    for r in rows:
        if "images_per_s" in r:
            print(f"{r['category']}: indexing {r['images_per_s']:.1f} images/s with local features, "
                  f"{r['global_images_per_s']:.1f} without ({r['images_per_s'] / r['global_images_per_s']:.2f}x); "
                  f"{r['bytes_per_image'] / 1e3:.1f} kB of local features per image, "
                  f"{r['local_index_bytes'] / 1e6:.2f} MB local index")
        if "map_rerank" in r:
            print(f"Caltech-101 ({r['n']} test images, leave-one-out): mAP {r['map_global']:.4f} re-ranking off, "
                  f"{r['map_rerank']:.4f} on")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def bench_category(folder: Path, work: Path, configs: Sequence[str]) -> list[dict[str, Any]]:
    """Every row for one smvs_dev category."""
    refs = folder / "Reference"
    queries = sorted((folder / "Query").glob("*.jpg"))
    options = EngineOptions(device="cpu")
    t0 = time.perf_counter()
    plain = Engine.create(work / "global", options=options)
    plain.index([refs])
    global_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = Engine.create(work / "local", options=options, local_features="sift")
    report = engine.index([refs])
    local_s = time.perf_counter() - t0
    truth = {Path(h.path).stem: h.id for h in engine.search(np.ones(engine.manifest.dim, np.float32),
                                                            k=len(engine), rerank=False)}
    wanted = [truth[q.stem] for q in queries]
    stored = [len(b) for block in engine.catalog.iter_local_features() for _, b in block]
    rows: list[dict[str, Any]] = [{
        "category": folder.name, "images_per_s": report.embedded / local_s,
        "global_images_per_s": report.embedded / global_s, "bytes_per_image": float(np.mean(stored)),
        "local_index_bytes": (work / "local" / "local.index").stat().st_size}]

    def global_ranking(q: Path) -> list[int]:
        return [h.id for h in engine.search(q, k=SHORT, rerank=False)]

    def words_ranking(q: Path) -> list[int]:
        image = QueryBuilder._load(str(q), engine._queries.draft_size).image
        local = engine._local
        assert local is not None
        features = local.query_extractor.extract(image)
        return [i for i, _ in local.cache.read(engine._lock).search(features, SHORT)]

    def fused_ranking(q: Path) -> list[int]:
        return reciprocal_rank_fusion([global_ranking(q), words_ranking(q)], limit=SHORT)

    def full_ranking(q: Path) -> list[int]:
        return [h.id for h in engine.search(q, k=SHORT)]

    stages: list[tuple[str, Callable[[Path], list[int]]]] = [
        ("global", global_ranking), ("words", words_ranking), ("fused", fused_ranking),
        ("fused + verified", full_ranking)]
    for stage, rank in stages:
        rows += _score(folder.name, stage, queries, wanted, rank)
    engine.close()
    plain.reindex(whiten=True)
    ids = {Path(h.path).stem: h.id for h in plain.search(np.ones(plain.manifest.dim, np.float32), k=len(plain))}
    rows += _score(folder.name, "global: whitened", queries, [ids[q.stem] for q in queries],
                   lambda q: [h.id for h in plain.search(q, k=SHORT)])
    plain.close()
    for label, fields in (c.split("=", 1) for c in configs):
        with Engine.create(work / label, ExtractorConfig(**json.loads(fields)), options=options) as other:
            other.index([refs])
            ids = {Path(h.path).stem: h.id for h in other.search(np.ones(other.manifest.dim, np.float32),
                                                                  k=len(other))}
            rows += _score(folder.name, f"global: {label}", queries, [ids[q.stem] for q in queries],
                           lambda q, e=other: [h.id for h in e.search(q, k=SHORT)])
    return rows


def _score(category: str, stage: str, queries: Sequence[Path], wanted: Sequence[int],
           rank: Callable[[Path], list[int]]) -> list[dict[str, Any]]:
    """Top-1, top-5, recall@50 and latency of one ranking, per split (odd: development, even:
    held out, all)."""
    rank(queries[0])  # warm-up: model, caches
    found, times = [], []
    for q, want in zip(queries, wanted):
        start = time.perf_counter()
        ranking = rank(q)
        times.append((time.perf_counter() - start) * 1000)
        found.append(ranking.index(want) if want in ranking else None)
    out = []
    for split, keep in (("odd (dev)", 1), ("even (held out)", 0), ("all", None)):
        picked = [i for i, q in enumerate(queries) if keep is None or int(q.stem) % 2 == keep]
        ranks = [found[i] for i in picked]
        ms = [times[i] for i in picked]
        row = {"category": category, "split": split, "n": len(picked), "stage": stage,
               "top1": np.mean([r == 0 for r in ranks]), "top5": np.mean([r is not None and r < 5 for r in ranks]),
               "recall50": np.mean([r is not None for r in ranks]), "p50_ms": float(np.percentile(ms, 50)),
               "p99_ms": float(np.percentile(ms, 99))}
        out.append({k: float(v) if isinstance(v, np.floating) else v for k, v in row.items()})
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def bench_caltech(work: Path, limit: int) -> list[dict[str, Any]]:
    """Caltech-101 leave-one-out mAP over the first `limit` test images, re-ranking on and off."""
    listing = (DATA / "caltech101" / "test.txt").read_text().split()[:limit]
    folder = work / "images"
    for line in listing:  # a folder of links: the Engine indexes folders
        target = folder / line
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(DATA / "caltech101" / "images" / line)
    with Engine.create(work / "b", options=EngineOptions(device="cpu"), local_features="sift") as engine:
        engine.index([folder], follow_links=True)
        paths = {h.id: h.path for h in engine.search(np.ones(engine.manifest.dim, np.float32), k=len(engine),
                                                     rerank=False)}
        classes = {i: Path(p).parent.name for i, p in paths.items()}
        maps = {}
        for rerank in (False, True):
            aps = [_average_precision([h.id for h in engine.search(i, k=len(engine) - 1, rerank=rerank)],
                                      classes, classes[i]) for i in paths]
            maps[rerank] = float(np.mean(aps))
    return [{"category": "caltech101", "n": len(paths), "map_global": maps[False], "map_rerank": maps[True]}]


def _average_precision(ranking: Sequence[int], classes: dict[int, str], wanted: str) -> float:
    hits = np.array([classes[i] == wanted for i in ranking], bool)
    if not hits.any():
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].sum() / hits.sum())


if __name__ == "__main__":
    main()
