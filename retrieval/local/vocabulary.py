"""A visual vocabulary: k-means centroids of local descriptors, and word assignment.

The k-means is spherical (centroids kept on the unit sphere) because RootSIFT vectors are
unit length: nearest centroid by inner product is then nearest by Euclidean distance and by
Hellinger kernel alike, and one exact inner-product search assigns words.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ann.base import array_of, pack, unpack
from ..errors import RetrievalError

__all__ = ["DESCRIPTORS_PER_WORD", "GRAPH_WORDS", "Vocabulary", "sample_descriptors", "vocabulary_size"]

_FORMAT = 1
MAX_WORDS = 1 << 16  # word ids fit in uint16 in the inverted file
DESCRIPTORS_PER_WORD = 5  # vocabulary_size's rule
GRAPH_WORDS = 4096
"""From this many words on, training and assignment find nearest words through an HNSW
graph of the centroids (efSearch 32) rather than an exact scan: 16,384 words assigned to
1,000 descriptors took ~40-60 ms instead of ~250 ms here, agreeing with the exact scan on
99.8% of them; k-means training took 24 s instead of 37 s, and the gap grows with the
vocabulary. The graph is built with several threads, so such a vocabulary may differ in a
few words between two trainings on the same sample."""
_GRAPH_LINKS, _GRAPH_BUILD_DEPTH, _GRAPH_SEARCH_DEPTH = 16, 40, 32


def vocabulary_size(descriptors: int, per_word: int = DESCRIPTORS_PER_WORD, high: int = MAX_WORDS) -> int:
    """How many words to train for a collection with `descriptors` local descriptors: one
    per `per_word` of them, at most `high`.

    Finer words discriminate instances better as long as matching descriptors still fall
    in the same word. On the development photos (odd-numbered smvs queries) the words
    alone put the right painting first for 0.57 of the photos with ~4,000 words (the
    previous square-root rule, 13 descriptors a word) and 0.80 with ~16,000 (4 a word),
    and the right one among the first ten for 0.87 -> 0.96. 100 images x 1,000 features
    -> 20,000 words; from ~330 images on, the 65,536 that uint16 word ids allow, where the
    cost of training (words x sample) stops growing with the collection.

    Raises:
        RetrievalError: fewer descriptors than one word needs.
    """
    if descriptors < per_word:
        raise RetrievalError(f"{descriptors} local descriptors are too few to train a vocabulary "
                             f"(at least {per_word})")
    return min(descriptors // per_word, high)


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
        clustering = faiss.Clustering(sample.shape[1], words)
        clustering.niter, clustering.seed, clustering.spherical = iterations, seed, True
        clustering.max_points_per_centroid, clustering.min_points_per_centroid = points_per_word + 1, 1
        clustering.train(sample, _nearest_word_index(sample.shape[1], words))
        return cls(_unit(faiss.vector_to_array(clustering.centroids).reshape(words, -1)))

    def assign(self, descriptors: np.ndarray) -> np.ndarray:
        """int64 (N,): the nearest word of each descriptor (uint8 or unit float32); exact
        below :data:`GRAPH_WORDS` words, through the centroids' HNSW graph from there on."""
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise RetrievalError(f"descriptors are {list(x.shape)}, expected (N, {self.dim})")
        if len(x) == 0:
            return np.zeros(0, np.int64)
        _, words = self._word_index.search(_unit(x), 1)
        return words[:, 0].astype(np.int64)

    @functools.cached_property
    def _word_index(self) -> Any:
        """The index over the centroids that assigns words, built on first assignment."""
        index = _nearest_word_index(self.dim, self.size)
        index.add(self.centroids)
        return index

    def to_bytes(self) -> bytes:
        """The centroids, and for a large vocabulary its word graph, in an npz archive (no
        pickle): the graph of 65,536 words takes seconds to build, and a one-shot query
        (`retrieve query`) would pay that on every run."""
        arrays = {"format": np.array([_FORMAT], np.int64), "centroids": self.centroids}
        if self.size >= GRAPH_WORDS:
            from ..ann.faiss_index import _serialize

            arrays["graph"] = _serialize(self._word_index)
        return pack(arrays)

    @classmethod
    def from_bytes(cls, payload: bytes) -> Vocabulary:
        """The vocabulary :meth:`to_bytes` saved.

        Raises:
            ValueError: not such a payload, a newer format, damaged centroids, or a word
                graph that is not an inner-product HNSW graph of these centroids.
        """
        arrays = unpack(payload, required=("format", "centroids"))
        if arrays["format"].tolist() != [_FORMAT]:
            raise ValueError(f"vocabulary format {arrays['format'].tolist()}; this release reads [{_FORMAT}]")
        vocabulary = cls(np.ascontiguousarray(arrays["centroids"]))
        if vocabulary.size >= GRAPH_WORDS and "graph" in arrays:
            import faiss

            from ..ann.faiss_index import _deserialize

            graph = _deserialize(array_of(arrays, "graph", "u"), faiss.IndexHNSWFlat, vocabulary.dim)
            if graph.ntotal != vocabulary.size:
                raise ValueError(f"the word graph holds {graph.ntotal} words, the vocabulary {vocabulary.size}")
            graph.hnsw.efSearch = _GRAPH_SEARCH_DEPTH
            vars(vocabulary)["_word_index"] = graph  # what the cached property would build
        return vocabulary


def _nearest_word_index(dim: int, words: int) -> Any:
    """An empty inner-product index for finding nearest words: exact for a small
    vocabulary, an HNSW graph for a large one (:data:`GRAPH_WORDS`)."""
    import faiss

    if words < GRAPH_WORDS:
        return faiss.IndexFlatIP(dim)
    graph = faiss.IndexHNSWFlat(dim, _GRAPH_LINKS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction, graph.hnsw.efSearch = _GRAPH_BUILD_DEPTH, _GRAPH_SEARCH_DEPTH
    return graph


def _unit(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (zero rows stay zero)."""
    v = np.asarray(x, np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), np.float32)
