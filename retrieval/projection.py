"""A map of the collection: every stored vector projected to 2-D, for a front end to draw.

The projection is PCA (the two directions along which the vectors vary most), from the
d x d covariance, so its cost grows with the collection only linearly and memory stays
one block of vectors plus d x d. It is deterministic (the same collection gives the same
map, up to the sign of an axis, which is fixed here), and nearby points are images with
similar vectors. Large collections are mapped from an even sample of their ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .catalog import STATUS_OK, Catalog
from .errors import BadQueryError

__all__ = ["MAX_POINTS", "CollectionMap", "collection_map"]

MAX_POINTS = 20_000
"""The most points a map holds: more would not be readable on a screen, nor cheap to send."""


@dataclass(frozen=True)
class CollectionMap:
    """Image ids and their positions, each coordinate scaled to [0, 1]."""

    ids: np.ndarray  # (n,) int64
    xy: np.ndarray  # (n, 2) float32
    total: int  # images in the index (more than len(ids) when sampled)


def collection_map(catalog: Catalog, limit: int = 5000) -> CollectionMap:
    """Up to `limit` indexed images (an even sample by id order when there are more),
    placed by the first two principal components of their vectors.

    Raises:
        BadQueryError: `limit` is not an integer from 1 to MAX_POINTS.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_POINTS:
        raise BadQueryError(f"limit must be an integer from 1 to {MAX_POINTS}, not {limit!r}")
    ids: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    with catalog.snapshot():  # the count and the vectors from one state of the catalog
        total = catalog.counts().get(STATUS_OK, 0)
        keep = np.unique(np.linspace(0, max(total - 1, 0), min(limit, total)).round().astype(np.int64))
        seen = 0
        for block_ids, block in catalog.iter_vectors():  # only the sample is kept: memory is one block
            chosen = np.isin(np.arange(seen, seen + len(block_ids)), keep)
            ids.append(block_ids[chosen])
            rows.append(block[chosen])
            seen += len(block_ids)
    if not ids or not sum(map(len, ids)):
        return CollectionMap(np.zeros(0, np.int64), np.zeros((0, 2), np.float32), total)
    return CollectionMap(np.concatenate(ids), _scaled(_pca2(np.concatenate(rows).astype(np.float64))), total)


def _pca2(vectors: np.ndarray) -> np.ndarray:
    """The vectors' coordinates on their two main axes ((n, 2); zeros where they do not vary)."""
    centred = vectors - vectors.mean(0)
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2))
    values, axes = np.linalg.eigh(centred.T @ centred)
    top = axes[:, np.argsort(values)[::-1][:2]]
    if top.shape[1] < 2:
        top = np.pad(top, ((0, 0), (0, 2 - top.shape[1])))
    coords = centred @ top
    signs = np.sign(coords[np.abs(coords).argmax(0), [0, 1]])  # the farthest point on each axis is positive
    return coords * np.where(signs == 0, 1.0, signs)


def _scaled(coords: np.ndarray) -> np.ndarray:
    low, span = coords.min(0), np.ptp(coords, 0)
    return ((coords - low) / np.where(span > 0, span, 1.0)).astype(np.float32)
