"""ANN backends at several collection sizes: build time, index size (what it holds in memory), recall@10, QPS, latency.

Vectors: real embeddings of Caltech-101 (default extractor, every image plus its mirror
image: 11,568 vectors) for sizes up to that; above it, points between real neighbours (see
collection_of), so the collection keeps the real data's anisotropy, clusters and graded
neighbourhoods. Queries are real
embeddings of held-out test images, never part of the collection. Recall@10 and the
single-query latencies follow the Engine's path (fetch k x the backend's re-rank factor,
re-score exactly, keep k; stored vectors read from memory here, from SQLite in the
Engine), against exact search on the same collection, at each backend's default settings.
QPS is the raw backend searching all queries in one batch.

    .venv/bin/python scripts/bench_ann.py --sizes 10000 100000           # ~15 min on 2 cores
    .venv/bin/python scripts/bench_ann.py --sizes 10000 100000 1000000   # the README table, ~1.5 h
    .venv/bin/python scripts/bench_ann.py --sizes 1000000 --backends flat hnsw

Embeddings are computed once and cached in bench-data/ (ignored by git).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from retrieval import ann
from retrieval.extractors import ExtractorConfig, create_extractor
from retrieval.images.batches import DecodeDataset, decode_loader

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "caltech101"
CACHE = ROOT / "bench-data"


def real_embeddings(device: str) -> tuple[np.ndarray, np.ndarray]:
    """(collection, queries): train-split images and their mirrors; test-split images."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / "caltech101_lite0_embeddings.npz"
    if path.exists():
        z = np.load(path)
        return z["collection"], z["queries"]
    extractor = create_extractor(ExtractorConfig(), device)
    out = {}
    for split in ("train", "test"):
        files = [str(DATA / "images" / r) for r in (DATA / f"{split}.txt").read_text().split()]
        loader = decode_loader(DecodeDataset(files, extractor.preprocessor), workers=2, pin=False, batch_size=32)
        vecs = []
        for n, batch in enumerate(loader):
            vecs.append(extractor.embed(batch.pixels, batch.heights, batch.widths))
            if split == "train":  # the mirror image is another real photo of the scene
                mirrored = batch.pixels.clone()
                for i, w in enumerate(batch.widths.tolist()):
                    mirrored[i, :, :w] = batch.pixels[i, :, :w].flip(1)
                vecs.append(extractor.embed(mirrored, batch.heights, batch.widths))
            print(f"\rembedding {split}: {(n + 1) * 32}/{len(files)}", end="", file=sys.stderr)
        out[split] = np.concatenate(vecs)
        print(file=sys.stderr)
    np.savez(path, collection=out["train"], queries=out["test"])
    return out["train"], out["test"]


def collection_of(size: int, real: np.ndarray, seed: int = 0) -> np.ndarray:
    """`size` unit vectors: the real ones first, then points between real neighbours.

    Each extra vector lies on the segment from a real vector to one of its 10 nearest
    real neighbours (at a uniform position, plus a little noise), renormalised: it stays
    on the real data's manifold, so a query's neighbours are graded as in a real
    collection. Isotropic noise around real vectors does not do that in 1,280 dimensions:
    it makes blobs of points all equally similar to a query, whose exact top 10 is
    decided by the noise (HNSW recall@10 fell to 0.80 on such blobs, whatever the spread).
    """
    if size <= len(real):
        return real[:size].copy()
    rng = np.random.default_rng(seed)
    exact = faiss.IndexFlatIP(real.shape[1])
    exact.add(real)
    _, neighbours = exact.search(real, 11)  # column 0 is the vector itself
    spread = real.std(axis=0).astype(np.float32) * 0.25
    out = np.empty((size, real.shape[1]), np.float32)
    out[: len(real)] = real
    for start in range(len(real), size, 100_000):
        n = min(100_000, size - start)
        i = rng.integers(0, len(real), n)
        j = neighbours[i, rng.integers(1, 11, n)]
        a = rng.uniform(0, 1, (n, 1)).astype(np.float32)
        block = a * real[i] + (1 - a) * real[j] + rng.standard_normal((n, real.shape[1]), np.float32) * spread
        out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def measure(name: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, latency_queries: int,
            k: int = 10) -> dict:
    ids = np.arange(len(data), dtype=np.int64)
    gc.collect()
    start = time.perf_counter()
    index = ann.create_index(name, data.shape[1])
    index.build(ids, data)
    build_s = time.perf_counter() - start
    size = len(index.to_bytes())  # what the index holds (vectors, codes, graph), as saved
    start = time.perf_counter()
    index.search(queries, k * index.rerank)  # raw backend throughput, all queries at once
    qps = len(queries) / (time.perf_counter() - start)

    def lookup(ids: list[int]) -> dict[int, np.ndarray]:  # the Engine reads these from SQLite
        return {i: data[i] for i in ids}

    found, latencies = [], []
    for n, q in enumerate(queries):  # what Engine.search does: over-fetch, re-rank exactly, keep k
        t0 = time.perf_counter()
        hits = ann.search_reranked(index, q, k, lookup)[:k]
        if n < latency_queries:
            latencies.append(time.perf_counter() - t0)
        found.append([i for i, _ in hits])
    recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
    del index
    return {"backend": name, "n": len(data), "build_s": round(build_s, 2), "index_mb": round(size / 2**20),
            "recall@10": round(recall, 4), "qps": round(qps, 1),
            "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 3),
            "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--backends", nargs="+", default=["flat", "ivf", "ivfpq", "hnsw", "annoy"])
    ap.add_argument("--queries", type=int, default=1000, help="queries for recall and QPS")
    ap.add_argument("--latency-queries", type=int, default=300,
                    help="how many of them are timed one by one (exact search at 1M takes ~1 s each)")
    ap.add_argument("--device", default="auto", help="for computing the embeddings only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    real, queries = real_embeddings(args.device)
    queries = queries[: args.queries]
    rows = []
    for size in args.sizes:
        data = collection_of(size, real)
        exact = faiss.IndexFlatIP(data.shape[1])
        exact.add(data)
        _, truth = exact.search(queries, 10)
        del exact
        for name in args.backends:
            row = measure(name, data, queries, truth, args.latency_queries)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        del data
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__} with "
               f"{faiss.omp_get_max_threads()} threads; load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        print(json.dumps({"machine": machine, "queries": len(queries), "rows": rows}))
        return
    print(table(rows, machine, len(queries)))


def table(rows: list[dict], machine: str, queries: int) -> str:
    """The markdown table; speed-ups are against exact (flat) search at the same N, measured
    in the same run, so they hold on a busy machine where the milliseconds do not."""
    flat = {r["n"]: r for r in rows if r["backend"] == "flat"}
    lines = [f"{queries} real queries, k=10, default parameters; {machine}", "",
             "| backend | N | build s | index MB | recall@10 | QPS (batch) | p50 ms | p99 ms | p50 vs flat |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = flat.get(r["n"])
        speedup = base["p50_ms"] / r["p50_ms"] if base and r is not base else None
        ratio = "-" if speedup is None else f"{speedup:.{0 if speedup >= 10 else 1}f}x faster"
        lines.append(f"| {r['backend']} | {r['n']:,} | {r['build_s']} | {r['index_mb']} | {r['recall@10']:.4f} "
                     f"| {r['qps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ratio} |")
    return "\n".join(lines)

if __name__ == "__main__":
    main()
