"""`Engine.info()` describes the ANN index without loading it (`retrieve info` imports no
FAISS): from the saved file's header when the file fits the settings, from the settings
when there is no such file, with the catalog's count; an index in memory as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import retrieval.bundle.ann_cache
import retrieval.bundle.cache
from retrieval import Engine
from retrieval.engine import ANN_FILE

from ..annhelpers import StubExtractor, clustered, synthetic_bundle, synthetic_records

DIM = 16
N = 400


def _reopen(path: Path) -> Engine:
    return Engine.open(path, extractor=StubExtractor(DIM))


def _forbid_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading a whole index file, loading an index or building one fail: what
    `info` may read is the file's header."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("info loaded or built the ANN index")

    for module, name in ((retrieval.bundle.cache, "read_bundle_file"), (retrieval.bundle.ann_cache, "load_index"),
                         (retrieval.bundle.ann_cache, "create_index")):
        monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("backend,params", [("auto", None), ("hnsw", {"M": 12}), ("ivf", {"nlist": 8}),
                                            ("annoy", None)])
def test_a_fresh_engine_describes_the_saved_index_as_the_engine_that_built_it(
        tmp_path: Path, backend: str, params: dict[str, Any] | None, monkeypatch: pytest.MonkeyPatch) -> None:
    s = synthetic_bundle(tmp_path / "b", clustered(N, DIM, 8, seed=1), backend, params)
    with s.engine:
        built = s.engine.info()["index"]  # the index in memory, as reindex left it
    assert built["count"] == N
    _forbid_loading(monkeypatch)
    with _reopen(tmp_path / "b") as engine:
        assert engine.info()["index"] == built


def test_without_a_fitting_file_the_settings_say_what_will_be_built(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    s = synthetic_bundle(tmp_path / "b", clustered(N, DIM, 8, seed=2), "hnsw", {"M": 12})
    with s.engine:
        built = s.engine.info()["index"]
    file = tmp_path / "b" / ANN_FILE
    clean = file.read_bytes()
    _forbid_loading(monkeypatch)
    for damage in (file.unlink, lambda: file.write_bytes(b"not a header"), lambda: file.write_bytes(b"[1]\n"),
                   lambda: file.write_bytes(clean.replace(b'"manifest": "stub-digest"', b'"manifest": "other"'))):
        damage()
        with _reopen(tmp_path / "b") as engine:
            assert engine.info()["index"] == built
        file.write_bytes(clean)


def test_the_count_is_the_catalogs_when_the_file_lags_behind(tmp_path: Path) -> None:
    """Rows committed after the file was saved (by a writer that could not save) are
    counted: the next search catches the index up to them."""
    vectors = clustered(N + 50, DIM, 8, seed=3)
    s = synthetic_bundle(tmp_path / "b", vectors[:N], "flat")
    with s.engine:
        s.engine.catalog.apply(synthetic_records(vectors[N:], seed=4, start=N))  # no save
    with _reopen(tmp_path / "b") as engine:
        assert engine.info()["index"] == {"type": "flat", "effective": "flat", "params": {}, "count": N + 50}
        engine.similar(1, k=3)  # loads the saved index and catches it up
        assert engine.info()["index"]["count"] == N + 50
