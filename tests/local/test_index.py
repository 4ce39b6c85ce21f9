"""LocalIndex: the vocabulary and inverted file over a collection, built in two streamed
passes, kept in step by add/remove, asking for a rebuild when it could train or has
outgrown its vocabulary, and saved in validated bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from retrieval.ann.base import pack, unpack
from retrieval.errors import BadQueryError, RetrievalError
from retrieval.local import (LocalFeatures, LocalIndex, LocalIndexOptions, RootSift, Vocabulary, vocabulary_size)

from .conftest import POSTERS

FIRST_ID = 100  # catalog ids differ from list positions, so a mix-up shows
OPTIONS = LocalIndexOptions(train_min=1000)  # the 30 posters (~12,500 descriptors) train; words sized by rule


def pairs(features: list[LocalFeatures], start: int = 0) -> list[tuple[int, LocalFeatures]]:
    return [(FIRST_ID + start + i, f) for i, f in enumerate(features)]


def source(items: list[tuple[int, LocalFeatures]]) -> Callable[[], Iterator[tuple[int, LocalFeatures]]]:
    return lambda: iter(items)


def copy(index: LocalIndex) -> LocalIndex:
    return LocalIndex.from_bytes(index.to_bytes())


def ids_of(hits: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in hits]


@pytest.fixture(scope="module")
def built(poster_features: list[LocalFeatures]) -> LocalIndex:
    return LocalIndex.build(source(pairs(poster_features)), OPTIONS)


@pytest.fixture(scope="module")
def query(snapshot: tuple[np.ndarray, np.ndarray, int], extractor: RootSift) -> LocalFeatures:
    """The features of a warped, relit photo of poster 7 on clutter."""
    return extractor.extract(snapshot[0])


def test_a_warped_photo_ranks_its_poster_first_in_a_vocabulary_sized_by_the_collection(
        built: LocalIndex, query: LocalFeatures, poster_features: list[LocalFeatures]) -> None:
    assert built.trained and built.ntotal == POSTERS and built.trained_on == POSTERS
    assert built.vocabulary is not None
    assert built.vocabulary.size == vocabulary_size(sum(len(f) for f in poster_features))
    hits = built.search(query, 5)
    assert hits[0][0] == FIRST_ID + 7
    assert hits[0][1] > hits[1][1]
    assert not built.needs_rebuild()


def test_building_reads_the_source_twice_and_is_reproducible(poster_features: list[LocalFeatures],
                                                             built: LocalIndex) -> None:
    calls = 0

    def counted() -> Iterator[tuple[int, LocalFeatures]]:
        nonlocal calls
        calls += 1
        return iter(pairs(poster_features))

    again = LocalIndex.build(counted, OPTIONS)
    assert calls == 2
    assert again.to_bytes() == built.to_bytes()


def test_a_collection_too_small_to_train_answers_nothing_and_asks_for_a_rebuild_once_it_could(
        poster_features: list[LocalFeatures]) -> None:
    first = pairs(poster_features[:3])
    options = LocalIndexOptions(train_min=sum(len(f) for _, f in first), words=64)
    empty = LocalIndex.build(source([]), options)
    assert not empty.trained and empty.ntotal == 0 and not empty.needs_rebuild()

    index = LocalIndex.build(source(first[:2]), options)
    assert not index.trained and index.ntotal == 2 and first[1][0] in index
    assert index.search(first[0][1], 5) == []
    assert not index.needs_rebuild()
    index.add(first[2:])
    assert index.needs_rebuild()
    index.remove([first[2][0]])
    assert not index.needs_rebuild()  # it counts what it holds, not what it was ever given
    index.add(first[2:])
    restored = copy(index)
    assert restored.ntotal == 3 and restored.needs_rebuild() and not restored.trained

    trained = LocalIndex.build(source(first), options)
    assert trained.trained and not trained.needs_rebuild()
    assert ids_of(trained.search(first[1][1], 1)) == [first[1][0]]


def test_a_collection_grown_to_four_times_what_it_was_trained_on_asks_for_a_rebuild(
        poster_features: list[LocalFeatures]) -> None:
    index = LocalIndex.build(source(pairs(poster_features[:5])), LocalIndexOptions(train_min=1000, words=64))
    assert index.trained_on == 5
    index.add(pairs(poster_features[5:20], start=5))
    assert index.ntotal == 20 and not index.needs_rebuild()
    index.add(pairs(poster_features[20:21], start=20))
    assert index.needs_rebuild()
    index.remove([FIRST_ID + 20])
    assert not index.needs_rebuild()
    assert copy(index).trained_on == 5


def test_remove_forgets_and_add_after_remove_finds_again(built: LocalIndex, query: LocalFeatures,
                                                         poster_features: list[LocalFeatures]) -> None:
    index = copy(built)
    source_id = FIRST_ID + 7
    index.remove([source_id, 999_999])  # an unknown id is ignored
    assert source_id not in index and index.ntotal == POSTERS - 1
    assert source_id not in ids_of(index.search(query, POSTERS))
    index.add([(source_id, poster_features[7])])
    assert ids_of(index.search(query, 1)) == [source_id]
    with pytest.raises(RetrievalError, match="already"):
        index.add([(source_id, poster_features[7])])


def test_an_image_without_features_is_held_never_found_and_removable(built: LocalIndex, query: LocalFeatures) -> None:
    index = copy(built)
    index.add([(5, LocalFeatures.empty(8, 8))])
    assert 5 in index and index.ntotal == POSTERS + 1
    assert 5 not in ids_of(index.search(query, POSTERS + 1))
    assert index.search(LocalFeatures.empty(8, 8), 3) == []
    index.remove([5])
    assert 5 not in index


def test_allowed_restricts_the_results(built: LocalIndex, query: LocalFeatures) -> None:
    source_id = FIRST_ID + 7
    others = np.array([FIRST_ID + i for i in range(POSTERS) if i != 7])
    hits = ids_of(built.search(query, POSTERS, allowed=others))
    assert hits and source_id not in hits and set(hits) <= set(others.tolist())
    few = ids_of(built.search(query, POSTERS, allowed=np.array([FIRST_ID + 3, source_id])))
    assert few[0] == source_id and set(few) <= {FIRST_ID + 3, source_id}


def test_bytes_keep_the_results(built: LocalIndex, query: LocalFeatures, poster_features: list[LocalFeatures]) -> None:
    restored = copy(built)
    assert (restored.ntotal, restored.trained_on, restored.options) == (built.ntotal, built.trained_on, built.options)
    assert restored.search(query, 10) == built.search(query, 10)
    assert restored.search(poster_features[3], 10) == built.search(poster_features[3], 10)


def _replaced(payload: bytes, **arrays: np.ndarray) -> bytes:
    return pack({**unpack(payload), **arrays})


def _without(payload: bytes, name: str) -> bytes:
    return pack({k: v for k, v in unpack(payload).items() if k != name})


def _other_vocabulary(payload: bytes) -> bytes:
    centroids = np.eye(4, 128, dtype=np.float32)
    return _replaced(payload, vocabulary=np.frombuffer(Vocabulary(centroids).to_bytes(), np.uint8))


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda p: p[: len(p) // 2],
    "not an archive": lambda p: b"PK" + bytes(200),
    "newer format": lambda p: _replaced(p, format=np.array([2])),
    "train_min out of range": lambda p: _replaced(p, options=np.array([3, 0, 0])),
    "unknown tf code": lambda p: _replaced(p, options=np.array([1000, 0, 7])),
    "tf unlike the inverted file's": lambda p: _replaced(p, options=np.array([1000, 0, 1])),
    "vocabulary of another size": _other_vocabulary,
    "vocabulary without inverted file": lambda p: _without(p, "inverted"),
    "damaged inverted file": lambda p: _replaced(p, inverted=np.frombuffer(b"garbage", np.uint8)),
    "negative trained_on": lambda p: _replaced(p, trained_on=np.array([-1])),
    "no trained_on": lambda p: _without(p, "trained_on"),
    "float options": lambda p: _replaced(p, options=np.array([1000.0, 0.0, 0.0])),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_bytes_of_a_trained_index_raise_value_error(built: LocalIndex, damage: str) -> None:
    with pytest.raises(ValueError):
        LocalIndex.from_bytes(DAMAGE[damage](built.to_bytes()))


UNTRAINED_DAMAGE: dict[str, dict[str, Any]] = {
    "repeated ids": {"pending_ids": np.array([1, 1]), "pending_counts": np.array([3, 4])},
    "negative id": {"pending_ids": np.array([-1, 2]), "pending_counts": np.array([3, 4])},
    "negative count": {"pending_ids": np.array([1, 2]), "pending_counts": np.array([3, -4])},
    "counts of other length": {"pending_ids": np.array([1, 2]), "pending_counts": np.array([3])},
    "claims training": {"trained_on": np.array([5])},
}


@pytest.mark.parametrize("damage", UNTRAINED_DAMAGE, ids=list(UNTRAINED_DAMAGE))
def test_damaged_bytes_of_an_untrained_index_raise_value_error(poster_features: list[LocalFeatures],
                                                               damage: str) -> None:
    index = LocalIndex.build(source(pairs(poster_features[:2])), LocalIndexOptions(train_min=100_000))
    assert LocalIndex.from_bytes(index.to_bytes()).ntotal == 2
    with pytest.raises(ValueError):
        LocalIndex.from_bytes(_replaced(index.to_bytes(), **UNTRAINED_DAMAGE[damage]))


def test_the_training_sample_stays_within_twice_what_training_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A long stream (2,000 images x 100 descriptors) for a 64-word vocabulary: k-means
    uses 64 x 16 = 1,024 descriptors, and the sample held never exceeds twice that, yet
    draws evenly from the whole stream (column 0 says which half a descriptor came from)."""
    sampled: list[np.ndarray] = []
    train = Vocabulary.train

    def capture(descriptors: np.ndarray, words: int, **kwargs: Any) -> Vocabulary:
        sampled.append(descriptors)
        return train(descriptors, words, **kwargs)

    monkeypatch.setattr(Vocabulary, "train", capture)
    rng = np.random.default_rng(5)

    def stream() -> Iterator[tuple[int, LocalFeatures]]:
        for i in range(2000):
            d = rng.integers(0, 60, (100, 128), dtype=np.uint8)
            d[:, 0] = i >= 1000
            yield i, LocalFeatures(np.full((100, 4), 1.0, np.float32), d, 10, 10)

    index = LocalIndex.build(stream, LocalIndexOptions(words=64, train_min=1000))
    (sample,) = sampled
    assert index.trained and index.ntotal == 2000
    assert 1024 * 0.8 <= len(sample) <= 2 * 1024
    assert 0.4 <= sample[:, 0].mean() <= 0.6


def test_bad_options_and_queries_are_retrieval_errors(built: LocalIndex, query: LocalFeatures) -> None:
    for bad in ({"train_min": 3}, {"words": 0}, {"words": 70_000}, {"tf": "raw"}, {"train_min": "many"}):
        with pytest.raises(RetrievalError, match="parameter"):
            LocalIndexOptions.of(bad)
    with pytest.raises(RetrievalError, match="unknown local-index option 'word'"):
        LocalIndexOptions.of({"word": 3})
    assert LocalIndexOptions.of({"words": "64"}).words == 64  # as a command line spells it
    untrained = LocalIndex(LocalIndexOptions())
    for index in (built, untrained):
        for k in (0, -1, 2.5, True):
            with pytest.raises(BadQueryError, match="k must be"):
                index.search(query, k)  # type: ignore[arg-type]
    with pytest.raises(RetrievalError, match="at least 0"):
        untrained.add([(-4, query)])
