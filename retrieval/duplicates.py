"""Exact and near-duplicate images, found without an N x N similarity matrix.

Near duplicates: each block of stored vectors asks the ANN index for its few nearest
neighbours, pairs above the threshold are merged with union-find. Memory is one parent
entry per image plus one block of results, so a million images fit in a few hundred MB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .ann.base import SearchIndex
from .catalog import Catalog

__all__ = ["DuplicateGroup", "exact_groups", "near_groups", "fold"]

# A half-size, quality-60 re-encode of a photo scores ~0.92 against it; distinct
# Caltech-101 photos of one class rarely pass 0.9 (and those that do look like copies).
DEFAULT_THRESHOLD = 0.90


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are the same picture. `score` is the lowest linking similarity."""

    ids: tuple[int, ...]
    paths: tuple[str, ...]
    exact: bool
    score: float


def exact_groups(catalog: Catalog) -> Iterator[DuplicateGroup]:
    """Groups of files with identical bytes (same content hash)."""
    for group in catalog.hash_groups():
        yield DuplicateGroup(tuple(i for i, _ in group), tuple(p for _, p in group), True, 1.0)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.weakest: dict[int, float] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int, score: float) -> None:
        ra, rb = self.find(a), self.find(b)
        low = min(score, self.weakest.get(ra, 1.0), self.weakest.get(rb, 1.0))
        if ra != rb:
            ra, rb = min(ra, rb), max(ra, rb)
            self.parent[rb] = ra
            self.parent.setdefault(ra, ra)
            self.weakest.pop(rb, None)
        self.weakest[ra] = low


def near_groups(catalog: Catalog, index: SearchIndex, threshold: float = DEFAULT_THRESHOLD,
                neighbours: int = 16, block: int = 1024,
                progress: Callable[[str, int, int], None] | None = None) -> list[DuplicateGroup]:
    """Groups of images whose vectors are at least `threshold` similar, transitively.

    Includes exact duplicates (similarity 1). Each image looks at `neighbours`
    candidates; a larger group than that is still joined through its members. On an
    approximate index the candidates are re-scored with the stored vectors (fetched
    for one block at a time), so the threshold applies to true similarities.
    """
    uf = _UnionFind()
    total, done = index.ntotal, 0
    for ids, vectors in catalog.iter_vectors(block):
        scores, found = index.search(vectors, (neighbours + 1) * index.rerank)
        if not index.exact:
            scores = _exact_scores(catalog, vectors, found)
        for row, image_id in enumerate(ids):
            for s, other in zip(scores[row], found[row]):
                if other >= 0 and other != image_id and s >= threshold:
                    uf.union(int(image_id), int(other), float(s))
        done += len(ids)
        if progress:
            progress("comparing", done, total)
    members: dict[int, list[int]] = {}
    for x in list(uf.parent):
        members.setdefault(uf.find(x), []).append(x)
    groups = [sorted(m) for m in members.values() if len(m) > 1]
    rows = catalog.rows_by_id(i for g in groups for i in g)
    out = []
    for g in sorted(groups):
        hashes = {rows[i].content_hash for i in g if i in rows}
        out.append(DuplicateGroup(tuple(g), tuple(rows[i].path for i in g if i in rows),
                                  len(hashes) == 1, round(uf.weakest[uf.find(g[0])], 6)))
    return out


def _exact_scores(catalog: Catalog, vectors: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Similarity of each block vector to each of its candidates (-inf where none or removed)."""
    stored = catalog.vectors(int(i) for i in np.unique(found[found >= 0]))
    out = np.full(found.shape, -np.inf, np.float32)
    for row, candidates in enumerate(found):
        for col, other in enumerate(candidates):
            vec = stored.get(int(other))
            if vec is not None:
                out[row, col] = float(vectors[row] @ vec)
    return out


def fold(ids: list[int], vectors: Mapping[int, np.ndarray], hashes: Mapping[int, str | None],
         threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, list[int]]]:
    """Fold a ranked list: each id joins the first kept id it duplicates.

    Returns (kept id, [its duplicates]) in rank order.
    """
    kept: list[tuple[int, list[int]]] = []
    for i in ids:
        for head, dups in kept:
            same_bytes = hashes.get(i) is not None and hashes.get(i) == hashes.get(head)
            if same_bytes or float(vectors[i] @ vectors[head]) >= threshold:
                dups.append(i)
                break
        else:
            kept.append((i, []))
    return kept
