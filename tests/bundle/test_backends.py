"""The Engine on every ANN backend (bundle.py's catalog <-> index glue): switching
backends with reindex, auto following the collection size, and deletes that never come
back through tombstones, buffers and compaction.

Synthetic bundles (stub extractor, vectors written straight into the catalog) make the
backend checks fast and prove that no image is embedded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import retrieval.bundle.ann_cache
from retrieval import Engine, ann
from retrieval.engine import ANN_FILE

from ..annhelpers import (SMALL_BACKENDS, StubExtractor, Synthetic, clustered, commit, noisy_queries, recall,
                          synthetic_bundle, synthetic_records)

DIM = 32


def _no_build(*args: object, **kwargs: object) -> None:
    """Stands in for the index factory where a saved index must be loaded, not rebuilt."""
    raise AssertionError("an ANN index was built where the saved one should have loaded")


def test_reindex_switches_every_backend_from_the_stored_vectors(synthetic_2000: Synthetic,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each backend is built from the catalog (the stub extractor would fail on any
    embedding), keeps its parameters across processes, and searches like exact search.
    Another process loads the saved file as it is: it builds no index (building is
    forbidden there) and rewrites nothing, and it finds what the writer finds."""
    synthetic = synthetic_2000
    queries = noisy_queries(synthetic, 30, seed=21)
    index_file = synthetic.engine.path / ANN_FILE
    for name, params in [*SMALL_BACKENDS.items(), ("flat", {})]:
        described = synthetic.engine.reindex(name, **params)
        assert (described["type"], described["effective"], described["count"]) == (name, name, 2000)
        assert {k: v for k, v in described["params"].items() if k in params} == params
        assert recall(synthetic, queries) >= (0.99 if name == "flat" else 0.85), name
        saved = index_file.read_bytes()
        expected = [[h.id for h in synthetic.engine.search(q, k=10)] for q in queries[:5]]
        with Engine.open(synthetic.engine.path, extractor=StubExtractor(DIM)) as again, monkeypatch.context() as m:
            shown = again.info()["index"]
            assert (shown["type"], shown["params"]) == (name, described["params"])
            m.setattr(retrieval.bundle.ann_cache, "create_index", _no_build)
            assert [[h.id for h in again.search(q, k=10)] for q in queries[:5]] == expected, name
        assert index_file.read_bytes() == saved, f"{name}: the saved index was rewritten"


def test_auto_follows_the_collection_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto is exact while small and switches (one rebuild) once the collection grows."""
    monkeypatch.setattr(ann, "AUTO_EXACT_BELOW", 1000)
    vectors = clustered(1500, DIM, 10, seed=22)
    s = synthetic_bundle(tmp_path / "auto", vectors[:900], "auto")
    with s.engine:
        assert s.engine.info()["index"]["effective"] == "flat"
        commit(s.engine, synthetic_records(vectors[900:], seed=1, start=900))
        described = s.engine.info()["index"]
        assert (described["type"], described["effective"], described["count"]) == ("auto", "hnsw", 1500)


@pytest.mark.parametrize("name", list(SMALL_BACKENDS))
def test_deleted_images_never_come_back_on_any_backend(tmp_path: Path, name: str) -> None:
    """After most of the collection is deleted (tombstones, buffers, compaction), every
    search returns min(k, live) results, none deleted, also in a fresh process."""
    s = synthetic_bundle(tmp_path / name, clustered(2000, DIM, 20, seed=23), name, SMALL_BACKENDS[name])
    rng = np.random.default_rng(24)
    gone = rng.choice(s.live, 1950, replace=False)
    with s.engine:
        for chunk in np.array_split(gone, 4):
            assert s.engine.remove(int(i) for i in chunk) == len(chunk)
            s.removed |= set(map(int, chunk))
            assert recall(s, noisy_queries(s, 5, seed=len(s.removed)), k=10) >= 0.8
        assert len(s.live) == 50 and len(s.engine) == 50
        for k in (49, 50, 80):
            recall(s, noisy_queries(s, 5, seed=k), k=k)
        assert not s.engine.ann.needs_rebuild(), "a write should have compacted the index"
    with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as again:
        ids = [h.id for h in again.search(s.vectors[s.live[0]], k=100)]
        assert sorted(ids) == s.live
