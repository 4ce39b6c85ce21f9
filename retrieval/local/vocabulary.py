"""A visual vocabulary: k-means centroids of local descriptors, and word assignment.

The k-means is spherical (centroids kept on the unit sphere) because RootSIFT vectors are
unit length: nearest centroid by inner product is then nearest by Euclidean distance and by
Hellinger kernel alike, and one exact inner-product search assigns words.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ann.base import pack, unpack
from ..errors import RetrievalError

__all__ = ["Vocabulary", "sample_descriptors", "vocabulary_size"]

_FORMAT = 1
MAX_WORDS = 1 << 16  # word ids fit in uint16 in the inverted file; far past where tf-idf gains


def vocabulary_size(descriptors: int, per_sqrt: float = 16.0, low: int = 1024, high: int = MAX_WORDS,
                    points_per_word: int = 16) -> int:
    """How many words to train for a collection with `descriptors` local descriptors.

    The rule: ``per_sqrt * sqrt(descriptors)``, clamped to [`low`, `high`], and at most
    ``descriptors / points_per_word`` so that every centroid has data to settle on. With
    the defaults: 100 images x 1,000 features -> 5,060 words; 10,000 images -> 50,596;
    a million -> 65,536. A vocabulary that grows with the collection keeps words specific
    enough to discriminate instances as the collection grows, while a square root keeps
    training time (k x sample size) within reach on a CPU.

    Raises:
        RetrievalError: fewer descriptors than one word needs.
    """
    if descriptors < points_per_word:
        raise RetrievalError(f"{descriptors} local descriptors are too few to train a vocabulary "
                             f"(at least {points_per_word})")
    wanted = min(max(round(per_sqrt * math.sqrt(descriptors)), low), high)
    return max(1, min(wanted, descriptors // points_per_word))


def sample_descriptors(descriptor_sets: Iterable[np.ndarray], per_set: int, seed: int = 0) -> np.ndarray:
    """Up to `per_set` random rows of each (N_i, D) array, stacked: a training sample
    gathered one image at a time, so a large collection's descriptors (128 bytes each,
    ~13 GB for 100,000 images) are never all in memory. For a vocabulary of k words,
    ``per_set = ceil(k * points_per_word / images)``.

    Raises:
        RetrievalError: `per_set` below 1, or sets of different widths.
    """
    if per_set < 1:
        raise RetrievalError(f"per_set must be at least 1, not {per_set}")
    rng = np.random.default_rng(seed)
    picked = [d if len(d) <= per_set else d[np.sort(rng.choice(len(d), per_set, replace=False))]
              for d in descriptor_sets]
    if len({d.shape[1:] for d in picked}) > 1:
        raise RetrievalError("descriptor sets of different dimensions cannot be sampled together")
    return np.concatenate(picked) if picked else np.zeros((0, 0), np.uint8)


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """`centroids`: float32 (words, dim), unit rows. Word ids are row numbers."""

    centroids: np.ndarray

    def __post_init__(self) -> None:
        c = self.centroids
        if c.dtype != np.float32 or c.ndim != 2 or not (1 <= len(c) <= MAX_WORDS) or c.shape[1] < 1:
            raise ValueError(f"centroids are {c.dtype}{list(c.shape)}, expected float32 (1..{MAX_WORDS}, dim)")
        if not np.isfinite(c).all():
            raise ValueError("centroids hold a non-finite value")

    @property
    def size(self) -> int:
        """Number of words."""
        return len(self.centroids)

    @property
    def dim(self) -> int:
        """Descriptor dimension."""
        return self.centroids.shape[1]

    @classmethod
    def train(cls, descriptors: np.ndarray, words: int, seed: int = 0, iterations: int = 12,
              points_per_word: int = 64) -> Vocabulary:
        """Spherical k-means (FAISS) of `words` centroids on a sample of `descriptors`.

        Args:
            descriptors: (N, D) uint8 quantised descriptors (as :class:`LocalFeatures`
                holds them) or float32 unit vectors; N >= `words`.
            words: vocabulary size, e.g. from :func:`vocabulary_size`.
            seed: the same seed and descriptors give the same vocabulary.
            iterations: k-means iterations.
            points_per_word: sample size per word: at most ``words * points_per_word``
                descriptors are drawn (training time grows with words x sample).

        Raises:
            RetrievalError: too few descriptors, or bad sizes.
        """
        import faiss

        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] < 1:
            raise RetrievalError(f"descriptors to train on are {list(x.shape)}, expected (N, dim)")
        if not (1 <= words <= min(MAX_WORDS, len(x))):
            raise RetrievalError(f"cannot train {words} words on {len(x)} descriptors (1 to {MAX_WORDS})")
        if iterations < 1 or points_per_word < 1:
            raise RetrievalError("iterations and points_per_word must be at least 1")
        rng = np.random.default_rng(seed)
        if len(x) > words * points_per_word:
            x = x[np.sort(rng.choice(len(x), words * points_per_word, replace=False))]
        sample = _unit(x)
        kmeans = faiss.Kmeans(sample.shape[1], words, niter=iterations, seed=seed, spherical=True,
                              max_points_per_centroid=points_per_word + 1, min_points_per_centroid=1,
                              verbose=False)
        kmeans.train(sample)
        return cls(_unit(kmeans.centroids))

    def assign(self, descriptors: np.ndarray) -> np.ndarray:
        """int64 (N,): the nearest word of each descriptor (uint8 or unit float32)."""
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise RetrievalError(f"descriptors are {list(x.shape)}, expected (N, {self.dim})")
        if len(x) == 0:
            return np.zeros(0, np.int64)
        _, words = self._flat_index.search(_unit(x), 1)
        return words[:, 0].astype(np.int64)

    @functools.cached_property
    def _flat_index(self) -> Any:
        """An exact inner-product index over the centroids, built on first assignment."""
        import faiss

        index = faiss.IndexFlatIP(self.dim)
        index.add(self.centroids)
        return index

    def to_bytes(self) -> bytes:
        """The centroids, in an npz archive (no pickle)."""
        return pack({"format": np.array([_FORMAT], np.int64), "centroids": self.centroids})

    @classmethod
    def from_bytes(cls, payload: bytes) -> Vocabulary:
        """The vocabulary :meth:`to_bytes` saved.

        Raises:
            ValueError: not such a payload, a newer format, or damaged centroids.
        """
        arrays = unpack(payload, required=("format", "centroids"))
        if arrays["format"].tolist() != [_FORMAT]:
            raise ValueError(f"vocabulary format {arrays['format'].tolist()}; this release reads [{_FORMAT}]")
        return cls(np.ascontiguousarray(arrays["centroids"]))


def _unit(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (zero rows stay zero)."""
    v = np.asarray(x, np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), np.float32)
