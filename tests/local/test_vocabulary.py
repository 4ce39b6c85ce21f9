"""The visual vocabulary: its size rule, seeded training, assignment and byte form."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from retrieval.errors import RetrievalError
from retrieval.local import LocalFeatures, Vocabulary, sample_descriptors, vocabulary_size
from retrieval.local.vocabulary import GRAPH_WORDS


def test_size_rule_is_one_word_per_five_descriptors_up_to_the_id_limit() -> None:
    assert vocabulary_size(80_000) == 16_000
    assert vocabulary_size(10**6, per_word=20) == 50_000
    assert vocabulary_size(10**12) == 65_536  # word ids are uint16
    assert vocabulary_size(5) == 1
    with pytest.raises(RetrievalError, match="too few"):
        vocabulary_size(4)


def test_a_large_vocabulary_assigns_through_a_graph_that_agrees_with_the_exact_scan() -> None:
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(GRAPH_WORDS, 16)).astype(np.float32)
    vocabulary = Vocabulary(centroids / np.linalg.norm(centroids, axis=1, keepdims=True))
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = np.argmax(x @ vocabulary.centroids.T, axis=1)
    assert type(vocabulary._word_index).__name__ == "IndexHNSWFlat"
    assert (vocabulary.assign(x) == exact).mean() > 0.95
    np.testing.assert_array_equal(vocabulary.assign(vocabulary.centroids[[7, 4000]]), [7, 4000])
    back = Vocabulary.from_bytes(vocabulary.to_bytes())
    assert "_word_index" in vars(back)  # the graph is loaded, not built again
    np.testing.assert_array_equal(back.assign(x), vocabulary.assign(x))


def test_a_word_graph_that_does_not_fit_its_vocabulary_is_refused() -> None:
    import faiss

    from retrieval.ann.base import pack

    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(GRAPH_WORDS, 16)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    small = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    small.add(centroids[:10])
    flat = faiss.IndexFlatIP(16)
    flat.add(centroids)
    for graph in (small, flat):
        payload = pack({"format": np.array([1], np.int64), "centroids": centroids,
                        "graph": faiss.serialize_index(graph)})
        with pytest.raises(ValueError):
            Vocabulary.from_bytes(payload)


def test_training_is_reproducible_with_a_seed(poster_features: list[LocalFeatures]) -> None:
    descriptors = np.concatenate([f.descriptors for f in poster_features[:10]])
    a = Vocabulary.train(descriptors, 128, seed=3)
    b = Vocabulary.train(descriptors, 128, seed=3)
    c = Vocabulary.train(descriptors, 128, seed=4)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assign(descriptors), b.assign(descriptors))
    assert not np.array_equal(a.centroids, c.centroids)
    np.testing.assert_allclose(np.linalg.norm(a.centroids, axis=1), 1.0, rtol=1e-5)  # spherical


def test_assignment_picks_the_nearest_centroid(vocabulary: Vocabulary, poster_features: list[LocalFeatures]) -> None:
    x = poster_features[0].unit_descriptors()
    words = vocabulary.assign(poster_features[0].descriptors)
    brute = np.argmin(((x[:, None, :] - vocabulary.centroids[None]) ** 2).sum(-1), axis=1)
    assert words.dtype == np.int64 and (words == brute).mean() > 0.99  # float ties aside
    np.testing.assert_array_equal(vocabulary.assign(vocabulary.centroids[[5, 9, 200]]), [5, 9, 200])
    assert vocabulary.assign(np.zeros((0, 128), np.uint8)).shape == (0,)
    with pytest.raises(RetrievalError):
        vocabulary.assign(np.zeros((3, 64), np.uint8))


def test_training_refuses_impossible_sizes() -> None:
    with pytest.raises(RetrievalError):
        Vocabulary.train(np.zeros((10, 128), np.uint8), 20)
    with pytest.raises(RetrievalError):
        Vocabulary.train(np.zeros(10, np.uint8), 2)


def test_round_trip_keeps_assignments(vocabulary: Vocabulary, poster_features: list[LocalFeatures]) -> None:
    back = Vocabulary.from_bytes(vocabulary.to_bytes())
    d = poster_features[1].descriptors
    np.testing.assert_array_equal(back.assign(d), vocabulary.assign(d))


def _archive(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("payload", [
    b"", b"not an archive",
    _archive(format=np.array([1]), centroids=np.full((4, 8), np.nan, np.float32)),
    _archive(format=np.array([1]), centroids=np.zeros((4, 8), np.float64)),
    _archive(format=np.array([1]), centroids=np.zeros(8, np.float32)),
    _archive(format=np.array([2]), centroids=np.zeros((4, 8), np.float32)),
    _archive(format=np.array([1])),
], ids=["empty", "garbage", "nan", "float64", "1-d", "newer", "missing"])
def test_damaged_bytes_raise_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        Vocabulary.from_bytes(payload)


def test_truncated_bytes_raise_value_error(vocabulary: Vocabulary) -> None:
    with pytest.raises(ValueError):
        Vocabulary.from_bytes(vocabulary.to_bytes()[:-100])


def test_sampling_takes_at_most_per_set_rows_of_each(poster_features: list[LocalFeatures]) -> None:
    sets = [f.descriptors for f in poster_features[:5]] + [poster_features[5].descriptors[:3]]
    sample = sample_descriptors(sets, 40, seed=1)
    assert sample.shape == (5 * 40 + 3, 128) and sample.dtype == np.uint8
    rows = {r.tobytes() for d in sets for r in d}
    assert all(r.tobytes() in rows for r in sample)  # real rows, not made up
    np.testing.assert_array_equal(sample, sample_descriptors(sets, 40, seed=1))
    assert not np.array_equal(sample, sample_descriptors(sets, 40, seed=2))
    with pytest.raises(RetrievalError):
        sample_descriptors(sets, 0)
    with pytest.raises(RetrievalError):
        sample_descriptors([np.zeros((2, 128), np.uint8), np.zeros((2, 64), np.uint8)], 5)
