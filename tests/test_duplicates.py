"""Duplicate groups at scale (retrieval/duplicates.py): planted copies and near-copies
are found in blocks of few-neighbour searches, never an N x N matrix, and grouped by
exact similarity even on a compressed index."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import numpy as np

from retrieval.ann import create_index
from retrieval.ann.base import AnnIndex
from retrieval.duplicates import near_groups

from .annhelpers import clustered, trained, unit

DIM = 32


class _VectorCatalog:
    """The catalog reads near_groups needs, over in-memory vectors."""

    @dataclass
    class Row:
        path: str
        content_hash: str

    def __init__(self, vectors: np.ndarray, hashes: list[str]) -> None:
        self.vectors_, self.hashes = vectors, hashes

    def iter_vectors(self, batch: int = 10_000):
        for start in range(0, len(self.vectors_), batch):
            stop = min(start + batch, len(self.vectors_))
            yield np.arange(start + 1, stop + 1, dtype=np.int64), self.vectors_[start:stop]

    def rows_by_id(self, ids):
        return {int(i): self.Row(f"/img/{int(i)}.jpg", self.hashes[int(i) - 1]) for i in ids}

    def vectors(self, ids):
        return {int(i): self.vectors_[int(i) - 1] for i in ids}


class _CountingIndex:
    """Wraps an index to record the shape of every search near_groups makes."""

    def __init__(self, index: AnnIndex) -> None:
        self.inner, self.calls = index, []
        self.exact, self.ntotal, self.rerank = index.exact, index.ntotal, index.rerank

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, effort: int = 0):
        self.calls.append((len(queries), k))
        return self.inner.search(queries, k, allowed, effort)


def test_near_duplicates_of_20k_vectors_without_an_n_by_n_matrix() -> None:
    """Planted pairs and triples (some byte-identical) are found exactly, in blocks of
    few-neighbour searches, with memory far below an N x N similarity matrix."""
    n, dim = 20_000, 48
    rng = np.random.default_rng(10)
    vectors = unit(rng.standard_normal((n, dim)))
    hashes = [f"h{i}" for i in range(n)]
    members = rng.permutation(n)[:700]
    planted: list[tuple[int, ...]] = []
    pos = 0
    for g in range(250):
        size = 3 if g % 10 == 0 else 2
        group = [int(i) for i in members[pos:pos + size]]
        pos += size
        head = group[0]
        for other in group[1:]:
            if g % 4 == 0:  # a byte-identical copy
                vectors[other], hashes[other] = vectors[head], hashes[head]
            else:
                vectors[other] = unit(vectors[head] + 0.2 * rng.standard_normal(dim) / np.sqrt(dim))
        planted.append(tuple(sorted(i + 1 for i in group)))
    index = create_index("flat", dim)
    index.build(np.arange(1, n + 1, dtype=np.int64), vectors)
    counting = _CountingIndex(index)
    catalog = _VectorCatalog(vectors, hashes)
    tracemalloc.start()
    try:
        groups = near_groups(catalog, counting, threshold=0.9, block=2048)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(g.ids for g in groups) == sorted(planted)
    exact_expected = {planted[g] for g in range(250) if g % 4 == 0}
    assert {g.ids for g in groups if g.exact} == exact_expected
    assert all(g.score >= 0.9 for g in groups)
    assert all(q <= 2048 and k <= 17 for q, k in counting.calls) and sum(q for q, _ in counting.calls) == n
    assert peak < n * n * 4 / 20, f"peak {peak / 1e6:.0f} MB: looks like an N x N matrix"


def test_near_duplicates_use_exact_similarity_on_a_compressed_index() -> None:
    """IVF-PQ scores are coarse; duplicate groups and their scores must come from the
    stored vectors, so a pair below the threshold is never grouped and one above is."""
    n, dim = 3000, DIM
    rng = np.random.default_rng(11)
    vectors = clustered(n, dim, 30, seed=11, spread=0.6)
    hashes = [f"h{i}" for i in range(n)]
    close = (0, 1)
    vectors[1] = unit(vectors[0] + 0.15 * rng.standard_normal(dim) / np.sqrt(dim))
    vectors[3] = unit(vectors[2] + 0.9 * rng.standard_normal(dim) / np.sqrt(dim))
    threshold = float(vectors[0] @ vectors[1] + vectors[2] @ vectors[3]) / 2
    index = create_index("ivfpq", dim, train_min=1000, pq_m=4)
    index.build(np.arange(1, n + 1, dtype=np.int64), vectors)
    assert trained(index)
    groups = near_groups(_VectorCatalog(vectors, hashes), index, threshold=threshold)  # type: ignore[arg-type]
    exact = vectors @ vectors.T
    np.fill_diagonal(exact, -1)
    for g in groups:
        ids = [i - 1 for i in g.ids]
        linked = all(max(exact[i][j] for j in ids if j != i) >= threshold for i in ids)
        assert linked, f"group {g.ids} holds an image below the threshold to all others"
        assert g.score >= threshold
    grouped = {i for g in groups for i in g.ids}
    assert {close[0] + 1, close[1] + 1} <= grouped
