"""The inverted file: cosine tf-idf scores equal a dense reference computation, removals
and additions keep it in step, and its byte form round-trips and refuses damage."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from retrieval.errors import BadQueryError, RetrievalError
from retrieval.local import InvertedFile, LocalFeatures, RootSift, Vocabulary, inverted

WORDS = 60


def corpus(n: int, seed: int = 0) -> dict[int, np.ndarray]:
    """n documents of 20-40 words with repeats, skewed towards frequent words; ids 100+."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, WORDS + 1)
    return {100 + i: rng.choice(WORDS, int(rng.integers(20, 41)), p=p / p.sum()) for i in range(n)}


def dense_cosines(docs: dict[int, np.ndarray], query: np.ndarray, tf: str = "log") -> dict[int, float]:
    """The reference: dense tf-idf vectors, idf = ln(1 + N / df), cosine."""
    ids = list(docs)
    counts = np.array([np.bincount(docs[i], minlength=WORDS) for i in ids], float)
    df = (counts > 0).sum(axis=0)
    idf = np.log1p(len(ids) / np.maximum(df, 1))

    def weigh(c: np.ndarray) -> np.ndarray:
        w = np.where(c > 0, 1 + np.log(np.maximum(c, 1)), 0.0) if tf == "log" else (c > 0).astype(float)
        return w * idf

    d = weigh(counts)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = weigh(np.bincount(query, minlength=WORDS).astype(float))
    cos = d @ (q / np.linalg.norm(q))
    return {i: float(c) for i, c in zip(ids, cos) if c > 0}


def filled(docs: dict[int, np.ndarray], tf: str = "log") -> InvertedFile:
    index = InvertedFile(WORDS, tf=tf)
    for image_id, words in docs.items():
        index.add(image_id, words)
    return index


def assert_matches_reference(index: InvertedFile, docs: dict[int, np.ndarray], query: np.ndarray,
                             k: int = 10, tf: str = "log") -> None:
    reference = dense_cosines(docs, query, tf)
    hits = index.search(query, k)
    expected = sorted(reference.values(), reverse=True)[:k]
    np.testing.assert_allclose([s for _, s in hits], expected, rtol=1e-5)
    for image_id, score in hits:
        assert reference[image_id] == pytest.approx(score, rel=1e-5)


@pytest.mark.parametrize("tf", ["log", "binary"])
def test_scores_are_the_cosine_of_tf_idf_vectors(tf: str) -> None:
    docs = corpus(40)
    index = filled(docs, tf)
    for seed in range(3):
        query = np.random.default_rng(seed).choice(WORDS, 25)
        assert_matches_reference(index, docs, query, tf=tf)
    assert index.search(docs[105], 1) == [(105, pytest.approx(1.0))]  # a document finds itself


def test_remove_forgets_and_add_after_remove_works() -> None:
    docs = corpus(40)
    index = filled(docs)
    index.remove([105, 999])  # an unknown id is ignored
    assert index.ntotal == 39 and 105 not in index
    assert 105 not in [i for i, _ in index.search(docs[105], 40)]
    del docs[105]
    assert_matches_reference(index, docs, np.arange(WORDS))
    new = np.array([1, 2, 3, 50, 51, 52])
    index.add(105, new)
    docs[105] = new
    assert index.search(new, 1) == [(105, pytest.approx(1.0))]
    assert_matches_reference(index, docs, np.array([50, 51, 3, 7]))


def test_removing_most_images_keeps_the_rest_exact() -> None:
    docs = corpus(60)
    index = filled(docs)
    index.search(docs[100], 5)
    gone = list(docs)[::2] + list(docs)[1:20:2]
    index.remove(np.array(gone))
    docs = {i: w for i, w in docs.items() if i not in gone}
    assert index.ntotal == len(docs)
    assert_matches_reference(index, docs, np.arange(0, WORDS, 3), k=30)


def test_a_large_index_finds_recent_additions_before_merging(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a large index (here: any size), additions wait in a recent segment scored with
    the last merge's idf: the new image is found at once, and old scores do not move."""
    monkeypatch.setattr(inverted, "_EXACT_BELOW", 0)
    docs = corpus(400)
    index = filled(docs)
    query = np.array([0, 4, 9, 33, 47])
    before = dict(index.search(query, 400))
    new = np.array([33, 47, 47, 58, 59])
    index.add(7, new)
    after = dict(index.search(query, 401))
    assert after.pop(7) > 0
    assert after == pytest.approx(before)
    assert index.search(new, 1) == [(7, pytest.approx(1.0))]


def test_allowed_restricts_results() -> None:
    docs = corpus(30)
    index = filled(docs)
    top = index.search(docs[110], 3)
    allowed = np.array([i for i, _ in top[1:]] + [5000])
    assert index.search(docs[110], 3, allowed=allowed) == top[1:]
    assert index.search(docs[110], 3, allowed=np.array([], np.int64)) == []


def test_a_photo_finds_its_poster_among_distractors(snapshot, poster_features: list[LocalFeatures],
                                                    vocabulary: Vocabulary, extractor: RootSift) -> None:
    image, _, source = snapshot
    index = InvertedFile(vocabulary.size)
    for i, f in enumerate(poster_features):
        index.add(i, vocabulary.assign(f.descriptors))
    hits = index.search(vocabulary.assign(extractor.extract(image).descriptors), 5)
    assert hits[0][0] == source


def test_round_trip_keeps_results() -> None:
    docs = corpus(50)
    index = filled(docs)
    index.remove([101, 102])
    index.add(102, docs[102][:5])
    back = InvertedFile.from_bytes(index.to_bytes())
    assert back.ntotal == index.ntotal and back.tf == index.tf
    for seed in range(3):
        query = np.random.default_rng(seed).choice(WORDS, 20)
        assert back.search(query, 50) == index.search(query, 50)


def _archive(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _valid() -> dict[str, np.ndarray]:
    # two images (ids 8, 9); word 0 in both, word 2 in image 9 twice; 3 words
    return {"format": np.array([1]), "words": np.array([3]), "tf": np.array([0]), "ids": np.array([8, 9]),
            "indptr": np.array([0, 2, 2, 3]), "slots": np.array([0, 1], np.int32).repeat([1, 2]),
            "counts": np.array([1, 1, 2], np.uint16)}


def test_the_hand_made_archive_is_valid() -> None:
    index = InvertedFile.from_bytes(_archive(**_valid()))
    assert index.ntotal == 2 and index.search(np.array([2]), 2)[0][0] == 9


@pytest.mark.parametrize("change", [
    {"format": np.array([2])}, {"words": np.array([0])}, {"tf": np.array([7])},
    {"ids": np.array([8, 8])}, {"ids": np.array([-1, 9])},
    {"indptr": np.array([0, 2, 3])}, {"indptr": np.array([1, 2, 2, 3])}, {"indptr": np.array([0, 3, 2, 3])},
    {"slots": np.array([0, 1, 2], np.int32)}, {"slots": np.array([1, 0, 1], np.int32)},
    {"slots": np.array([0, 0, 1], np.int32)}, {"counts": np.array([1, 0, 2], np.uint16)},
    {"counts": np.array([1, 1], np.uint16)}, {"slots": np.array([0.0, 1.0, 1.0])},
], ids=["format", "no-words", "tf", "repeated-id", "negative-id", "short-indptr", "indptr-start", "indptr-order",
        "slot-range", "slot-order", "slot-repeat", "zero-count", "short-counts", "float-slots"])
def test_damaged_archives_raise_value_error(change: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        InvertedFile.from_bytes(_archive(**{**_valid(), **change}))


def test_truncated_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        InvertedFile.from_bytes(filled(corpus(5)).to_bytes()[:-40])


def test_bad_arguments() -> None:
    index = filled(corpus(5))
    for k in (0, -1, True, 2.5):
        with pytest.raises(BadQueryError):
            index.search(np.array([1]), k)  # type: ignore[arg-type]
    with pytest.raises(BadQueryError):
        index.search(np.array([WORDS]), 3)
    with pytest.raises(BadQueryError):
        index.search(np.array([[1, 2]]), 3)
    with pytest.raises(RetrievalError, match="already"):
        index.add(100, np.array([1]))
    with pytest.raises(RetrievalError):
        index.add(-5, np.array([1]))
    with pytest.raises(RetrievalError):
        index.add(6, np.array([1.5]))
    with pytest.raises(RetrievalError):
        InvertedFile(0)
    with pytest.raises(RetrievalError, match="tf"):
        InvertedFile(10, tf="raw")
    assert index.search(np.array([], np.int64), 3) == []
