"""An ANN index over vectors mapped into another space, asked and answering in the original.

A learned whitening (:mod:`retrieval.extractors.whitening`) changes how an index compares
vectors, not what the catalog stores: the catalog keeps each image's extractor vector, and
only the index holds them whitened. Wrapping the backend here keeps that in one place:
whatever builds, updates or searches the index (the cache, `query.nearest`, duplicate
search) passes original vectors, and every score is an inner product in the mapped space.

An approximate backend's scores are re-scored exactly (see :func:`.base.search_reranked`);
the original vectors that the caller's look-up returns would not match mapped queries, so
this wrapper re-scores itself, from the same look-up mapped, and tells callers it is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .base import SearchIndex, pad_results

__all__ = ["MappedIndex"]

Lookup = Callable[[list[int]], Mapping[int, np.ndarray]]


class MappedIndex:
    """`inner` indexes ``mapping(vectors)``; this takes and searches with `in_dim`-d originals.

    Args:
        inner: an empty or loaded backend of the mapped dimension.
        mapping: (N, in_dim) -> (N, inner.dim) float32 unit rows.
        lookup: stored original vectors by id (the catalog's), for exact re-scoring of an
            approximate backend.
    """

    exact = True  # approximate inner results are re-scored here
    rerank = 1

    def __init__(self, inner: SearchIndex, mapping: Callable[[np.ndarray], np.ndarray], in_dim: int,
                 lookup: Lookup) -> None:
        self.inner, self.mapping, self.dim, self.lookup = inner, mapping, in_dim, lookup

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def ntotal(self) -> int:
        return self.inner.ntotal

    def params(self) -> dict[str, Any]:
        return self.inner.params()

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.inner.build(ids, self._mapped(vectors))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.inner.add(ids, self._mapped(vectors))

    def remove(self, ids: np.ndarray) -> None:
        self.inner.remove(ids)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               effort: int = 0) -> tuple[np.ndarray, np.ndarray]:
        mapped = self._mapped(queries)
        if self.inner.exact:
            return self.inner.search(mapped, k, allowed, effort)
        _, found = self.inner.search(mapped, k * self.inner.rerank, allowed, effort)
        stored = self.lookup(sorted({int(i) for i in found.ravel() if i >= 0}))
        scores, ids = [], []
        for q, row in zip(mapped, found):
            known = np.array([i for i in row.tolist() if i >= 0 and i in stored], np.int64)
            vectors = self._mapped(np.stack([stored[i] for i in known])) if len(known) else np.zeros((0, len(q)))
            scores.append((vectors @ q).astype(np.float32))
            ids.append(known)
        return pad_results(scores, ids, k)

    def max_effort(self, k: int) -> int:
        return self.inner.max_effort(k * self.inner.rerank)

    def needs_rebuild(self) -> bool:
        return self.inner.needs_rebuild()

    def to_bytes(self) -> bytes:
        return self.inner.to_bytes()

    def _mapped(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        return self.mapping(x) if len(x) else np.zeros((0, self.inner.dim), np.float32)
