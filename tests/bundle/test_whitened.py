"""A whitened index (``reindex --whiten``): learned from the catalog's vectors, stored in the
catalog, applied to everything the index holds and to every query, kept across processes,
dropped with ``--no-whiten``; the catalog's own vectors never change.

Synthetic bundles (stub extractor, vectors written straight into the catalog): the
expected rankings are computed here from the same vectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import retrieval.bundle.ann_cache
from retrieval import Engine
from retrieval.bundle.ann_cache import WHITENING_SETTING
from retrieval.engine import ANN_FILE
from retrieval.errors import RetrievalError
from retrieval.extractors.whitening import learn_whitening

from ..annhelpers import StubExtractor, Synthetic, clustered, commit, synthetic_bundle, synthetic_records

DIM = 32


@pytest.fixture()
def bundle(tmp_path: Path) -> Synthetic:
    """600 clustered vectors, stretched along a few axes so that whitening changes the ranking."""
    vectors = clustered(600, DIM, 12, seed=31)
    vectors[:, :4] *= 6.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    s = synthetic_bundle(tmp_path / "bundle", vectors, "flat")
    yield s
    s.engine.close()


def _queries(s: Synthetic, n: int = 20) -> np.ndarray:
    rng = np.random.default_rng(32)
    stored = np.stack(list(s.vectors.values()))
    q = stored[rng.choice(len(stored), n, replace=False)] + rng.normal(0, 0.05, (n, DIM))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def _whitened_top(s: Synthetic, q: np.ndarray, k: int, dim: int | None = None) -> list[int]:
    ids = np.array(list(s.vectors))
    w = learn_whitening(np.stack(list(s.vectors.values())), dim)
    scores = w.apply(np.stack(list(s.vectors.values()))) @ w.apply(q[None])[0]
    return ids[np.argsort(-scores, kind="stable")[:k]].tolist()


def test_whitening_is_learned_stored_and_applied_to_the_index_and_the_queries(bundle: Synthetic) -> None:
    engine, queries = bundle.engine, _queries(bundle)
    raw = [[h.id for h in engine.search(q, k=10)] for q in queries]
    described = engine.reindex(whiten=True, whiten_dim=16)
    assert described["whitening"]["dim"] == 16 and described["whitening"]["learned_from"] == 600
    whitened = [[h.id for h in engine.search(q, k=10)] for q in queries]
    assert whitened == [_whitened_top(bundle, q, 10, 16) for q in queries]
    assert whitened != raw  # it changes the ranking, or this test proves nothing
    first = engine.vectors([next(iter(bundle.vectors))])[0]
    np.testing.assert_allclose(first, next(iter(bundle.vectors.values())), atol=1e-6)  # the catalog keeps its own


def test_a_whitened_index_is_kept_across_processes_and_loaded_not_rebuilt(
        bundle: Synthetic, monkeypatch: pytest.MonkeyPatch) -> None:
    queries = _queries(bundle, 5)
    bundle.engine.reindex(whiten=True)
    expected = [[h.id for h in bundle.engine.search(q, k=10)] for q in queries]
    saved = (bundle.engine.path / ANN_FILE).read_bytes()
    with Engine.open(bundle.engine.path, extractor=StubExtractor(DIM)) as again, monkeypatch.context() as m:
        assert again.info()["index"]["whitening"]["learned_from"] == 600
        m.setattr(retrieval.bundle.ann_cache, "create_index", lambda *a, **k: pytest.fail("rebuilt"))
        assert [[h.id for h in again.search(q, k=10)] for q in queries] == expected
    assert (bundle.engine.path / ANN_FILE).read_bytes() == saved


def test_images_added_later_are_whitened_like_the_rest(bundle: Synthetic) -> None:
    bundle.engine.reindex(whiten=True)
    new = clustered(5, DIM, 1, seed=33)
    ids = commit(bundle.engine, synthetic_records(new, seed=34, start=600))
    for i, v in zip(ids, new):
        hits = bundle.engine.search(v, k=3)
        assert hits[0].id == i and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_an_approximate_backend_scores_exactly_in_the_whitened_space(bundle: Synthetic) -> None:
    queries = _queries(bundle)
    bundle.engine.reindex("ivf", whiten=True, train_min=200, nlist=8, nprobe=4)
    found = [[h.id for h in bundle.engine.search(q, k=10)] for q in queries]
    expected = [_whitened_top(bundle, q, 10) for q in queries]
    assert np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected)]) >= 0.9
    w = learn_whitening(np.stack(list(bundle.vectors.values())))
    hit = bundle.engine.search(queries[0], k=1)[0]
    assert hit.score == pytest.approx(float(w.apply(bundle.vectors[hit.id][None])[0] @ w.apply(queries[:1])[0]),
                                      abs=1e-5)


def test_no_whiten_goes_back_to_the_vectors_as_they_are(bundle: Synthetic) -> None:
    queries = _queries(bundle, 5)
    raw = [[h.id for h in bundle.engine.search(q, k=10)] for q in queries]
    bundle.engine.reindex(whiten=True)
    described = bundle.engine.reindex(whiten=False)
    assert "whitening" not in described and bundle.engine.catalog.get_setting(WHITENING_SETTING) is None
    assert [[h.id for h in bundle.engine.search(q, k=10)] for q in queries] == raw


def test_switching_backend_keeps_the_whitening(bundle: Synthetic) -> None:
    bundle.engine.reindex(whiten=True)
    digest = bundle.engine.info()["index"]["whitening"]["digest"]
    assert bundle.engine.reindex("hnsw")["whitening"]["digest"] == digest


@pytest.mark.parametrize("bad", [{"whiten_dim": 0}, {"whiten_dim": DIM + 1}])
def test_bad_whitening_requests_change_nothing(bundle: Synthetic, bad: dict) -> None:
    before = bundle.engine.catalog.get_setting("index")
    with pytest.raises(RetrievalError, match="whiten-dim"):
        bundle.engine.reindex(whiten=True, **bad)
    assert bundle.engine.catalog.get_setting("index") == before
    assert bundle.engine.catalog.get_setting(WHITENING_SETTING) is None


def test_too_few_images_to_learn_from(tmp_path: Path) -> None:
    s = synthetic_bundle(tmp_path / "one", clustered(1, DIM, 1, seed=35), "flat")
    with s.engine, pytest.raises(RetrievalError, match="too few"):
        s.engine.reindex(whiten=True)


def test_a_damaged_stored_whitening_is_a_clear_error_and_can_be_dropped(bundle: Synthetic) -> None:
    bundle.engine.reindex(whiten=True)
    record = json.loads(bundle.engine.catalog.get_setting(WHITENING_SETTING) or "{}")
    bundle.engine.catalog.set_setting(WHITENING_SETTING, json.dumps({**record, "data": record["data"][::-1]}))
    (bundle.engine.path / ANN_FILE).unlink()  # the next process must rebuild, and so read the whitening
    q = _queries(bundle, 1)[0]
    with Engine.open(bundle.engine.path, extractor=StubExtractor(DIM)) as again:
        with pytest.raises(RetrievalError, match="reindex --whiten"):
            again.search(q, k=3)
        again.reindex(whiten=False)
        assert len(again.search(q, k=3)) == 3
