"""AnnCache and WriteLock: switching settings safely, readers that cannot write, and
no leftovers.

The disk faults are injected where they happen: a full disk makes the write of the
temp file fail with ENOSPC; a read-only bundle makes creating the lock file fail (here
the lock's path is a folder, which the OS refuses the same way); another holder is a
second lock on the same file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from filelock import FileLock

from retrieval.bundle import files as bundle_files
from retrieval.ann import faiss_index
from retrieval.bundle import AnnCache, WriteLock, read_bundle_file, save_atomic
from retrieval.catalog import Catalog
from retrieval.engine import ANN_FILE, CATALOG_FILE, LOCK_FILE
from retrieval.errors import IndexBusyError, RetrievalError

from ..annhelpers import Synthetic, clustered, synthetic_bundle

DIM = 32
N = 400


@pytest.fixture()
def synthetic(tmp_path: Path) -> Synthetic:
    """An hnsw bundle of N vectors with its index saved; the Engine closed."""
    s = synthetic_bundle(tmp_path / "b", clustered(N, DIM, 6, seed=2), "hnsw", {"M": 8})
    s.engine.close()
    return s


@pytest.fixture()
def catalog(synthetic: Synthetic) -> Iterator[Catalog]:
    opened = Catalog(synthetic.engine.path / CATALOG_FILE)
    yield opened
    opened.close()


def _cache(synthetic: Synthetic, catalog: Catalog) -> AnnCache:
    """A cache configured as an Engine opening the bundle now would configure it."""
    settings = catalog.get_json("index")
    return AnnCache(synthetic.engine.path / ANN_FILE, catalog, DIM, synthetic.engine.manifest.weights_digest,
                    settings["backend"], settings["params"])


def _lock(synthetic: Synthetic) -> WriteLock:
    return WriteLock(synthetic.engine.path / LOCK_FILE, timeout=0.2)


def _top(index: Any, synthetic: Synthetic, i: int = 5) -> int:
    return int(index.search(synthetic.vectors[i][None], 1)[1][0, 0])


class _FullDisk:
    """Stands in for bundle.files._write_file: the disk is full. Counts the attempts."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int, chunks: Any, mode: int | None) -> None:
        self.calls += 1
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device")


def _leftovers(synthetic: Synthetic) -> list[Path]:
    return sorted(synthetic.engine.path.glob("*.tmp"))


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# ---------------------------------------------------------------------- switching settings


def test_switch_stores_the_settings_only_once_their_index_is_saved(synthetic: Synthetic, catalog: Catalog) -> None:
    cache, file = _cache(synthetic, catalog), synthetic.engine.path / ANN_FILE
    seen = []

    def commit(settings: dict[str, Any]) -> None:
        seen.append((settings, read_bundle_file(file)[0]["settings"]))
        catalog.set_setting("index", json.dumps(settings))

    with _lock(synthetic).held():
        described = cache.switch("annoy", {"n_trees": "4"}, commit)
    want = {"backend": "annoy", "params": {"n_trees": 4}}
    assert seen == [(want, want)], "the file on disk must already hold the new index when settings are stored"
    assert (described["type"], described["effective"], described["count"]) == ("annoy", "annoy", N)
    assert _top(cache.sync(), synthetic) == 5
    again = _cache(synthetic, catalog)
    assert again.sync().name == "annoy" and not again.rebuilt_unsaved, "the saved index loads as it is"
    with _lock(synthetic).held():
        kept = cache.switch(None, {}, commit)
    assert seen[-1][0] == want and kept["params"]["n_trees"] == 4, "no backend and no parameters: the same"


def _build_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(self: object, ids: np.ndarray, vectors: np.ndarray) -> None:
        raise MemoryError("k-means")

    monkeypatch.setattr(faiss_index.FaissIVF, "build", out_of_memory)


FAILURES = {
    # pq_m=64 passed the old check, made at dimension 64; this bundle's is 32
    "bad-parameter": (("ivfpq", {"pq_m": 64}), lambda mp: None, RetrievalError),
    "build-fails": (("ivfpq", {"train_min": 300}), _build_fails, MemoryError),
    "disk-full": (("ivfpq", {"train_min": 300}), lambda mp: mp.setattr(bundle_files, "_write_file", _FullDisk()), OSError),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_switch_leaves_settings_file_and_index_as_they_were(
        synthetic: Synthetic, catalog: Catalog, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    (backend, params), inject, error = FAILURES[failure]
    cache, file = _cache(synthetic, catalog), synthetic.engine.path / ANN_FILE
    index, saved, stored = cache.sync(), file.read_bytes(), catalog.get_setting("index")
    inject(monkeypatch)
    committed = []
    with _lock(synthetic).held(), pytest.raises(error):
        cache.switch(backend, params, committed.append)
    assert committed == [] and catalog.get_setting("index") == stored
    assert file.read_bytes() == saved and not _leftovers(synthetic)
    assert cache.backend == "hnsw" and cache.sync() is index and _top(index, synthetic) == 5


def test_settings_that_could_not_be_stored_do_not_adopt_the_new_file(synthetic: Synthetic, catalog: Catalog) -> None:
    """The new index was saved but storing its settings failed: the catalog still says
    hnsw, so the next load discards the annoy file and rebuilds under hnsw."""
    cache = _cache(synthetic, catalog)

    def commit(settings: dict[str, Any]) -> None:
        raise RuntimeError("database is locked")

    with _lock(synthetic).held(), pytest.raises(RuntimeError):
        cache.switch("annoy", {"n_trees": 4}, commit)
    assert cache.backend == "hnsw" and cache.sync().name == "hnsw"
    fresh = _cache(synthetic, catalog)
    assert fresh.sync().name == "hnsw" and fresh.rebuilt_unsaved


# ---------------------------------------------------------------------- readers that cannot write


def test_a_reader_on_a_full_disk_keeps_its_rebuilt_index_in_memory_and_warns_once(
        synthetic: Synthetic, catalog: Catalog, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    file = synthetic.engine.path / ANN_FILE
    file.unlink()
    full = _FullDisk()
    monkeypatch.setattr(bundle_files, "_write_file", full)
    cache, lock = _cache(synthetic, catalog), _lock(synthetic)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        for _ in range(3):
            index = cache.read(lock)
            assert index.ntotal == N and _top(index, synthetic) == 5
    assert full.calls == 1, "a reader tries once, then keeps the index in memory"
    assert _warnings(caplog, "keeping it in memory") == 1
    assert not file.exists() and not _leftovers(synthetic)
    monkeypatch.undo()
    with lock.held():
        cache.persist()  # a writer later, with room again: saved, and a next failure would warn again
    assert read_bundle_file(file)[0]["count"] == N and not cache.rebuilt_unsaved


def test_a_writer_on_a_full_disk_keeps_its_index_in_memory(synthetic: Synthetic, catalog: Catalog,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The write is in the catalog; the older file catches up from it in the next process."""
    cache, lock, file = _cache(synthetic, catalog), _lock(synthetic), synthetic.engine.path / ANN_FILE
    saved = file.read_bytes()
    monkeypatch.setattr(bundle_files, "_write_file", _FullDisk())
    with caplog.at_level(logging.WARNING, logger="retrieval"), lock.held():
        catalog.apply(removals=[5])
        cache.persist()
    assert _warnings(caplog, "keeping it in memory") == 1
    assert file.read_bytes() == saved and cache.sync().ntotal == N - 1
    monkeypatch.undo()
    later = _cache(synthetic, catalog)
    assert later.sync().ntotal == N - 1 and not later.rebuilt_unsaved


def test_a_reader_that_cannot_create_the_lock_keeps_its_index_in_memory(
        synthetic: Synthetic, catalog: Catalog, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A read-only bundle: the reader searches, writes nothing and says so once; a writer
    gets a clear error."""
    file = synthetic.engine.path / ANN_FILE
    file.unlink()
    unwritable = synthetic.engine.path / "locked"
    unwritable.mkdir()
    lock, cache = WriteLock(unwritable, timeout=0.2), _cache(synthetic, catalog)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        assert _top(cache.read(lock), synthetic) == 5
        assert _top(cache.read(lock), synthetic) == 5
    assert _warnings(caplog, "keeping it in memory") == 1 and not file.exists()
    with pytest.raises(RetrievalError, match="cannot be written"), lock.held():
        pass


def test_a_reader_leaves_saving_to_the_writer_holding_the_lock(synthetic: Synthetic, catalog: Catalog,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    file = synthetic.engine.path / ANN_FILE
    file.unlink()
    cache, lock = _cache(synthetic, catalog), _lock(synthetic)
    writer = FileLock(str(synthetic.engine.path / LOCK_FILE))
    with writer, caplog.at_level(logging.WARNING, logger="retrieval"):
        assert _top(cache.read(lock), synthetic) == 5
        assert not file.exists() and cache.rebuilt_unsaved
        with pytest.raises(IndexBusyError, match="being written by another process"), lock.held():
            pass
    assert _warnings(caplog, "") == 0, "a busy lock is not a problem"
    cache.read(lock)  # the lock is free now: the rebuilt index is saved for the next process
    assert read_bundle_file(file)[0]["count"] == N and not cache.rebuilt_unsaved


# ---------------------------------------------------------------------- leftovers and modes


def test_only_a_holder_of_the_write_lock_removes_a_killed_save_s_temp_files(synthetic: Synthetic,
                                                                          catalog: Catalog) -> None:
    folder = synthetic.engine.path
    (folder / ANN_FILE).unlink()
    crashed = [folder / f"{ANN_FILE}.k1ll3d.tmp", folder / f"{ANN_FILE}.x9y8z7.tmp"]
    for path in crashed:
        path.write_bytes(b"half a save")
    cache = _cache(synthetic, catalog)
    with FileLock(str(folder / LOCK_FILE)):  # busy: the reader must not touch a save that may be under way
        cache.read(_lock(synthetic))
    (folder / "locked").mkdir()
    cache.read(WriteLock(folder / "locked", timeout=0.2))  # cannot write at all
    assert _leftovers(synthetic) == crashed
    with _lock(synthetic).held():
        assert _leftovers(synthetic) == [], "a writer clears them as it takes the lock"
    crashed[0].write_bytes(b"half a save")
    with _lock(synthetic).held_if_free() as held:
        assert held and _leftovers(synthetic) == [], "so does a reader that can take it"


@pytest.mark.parametrize("mode", [0o640, 0o664, 0o600])
def test_the_index_file_has_the_catalog_s_mode(synthetic: Synthetic, catalog: Catalog, mode: int) -> None:
    """Whoever may read the catalog may read its cache (mkstemp alone gives 0600)."""
    (synthetic.engine.path / CATALOG_FILE).chmod(mode)
    cache = _cache(synthetic, catalog)
    with _lock(synthetic).held():
        cache.save()
    assert (synthetic.engine.path / ANN_FILE).stat().st_mode & 0o777 == mode


def test_bundle_files_carry_a_checksum_of_their_content(tmp_path: Path) -> None:
    file = tmp_path / "x.index"
    assert read_bundle_file(file) is None, "no file is not an error"
    save_atomic(file, {"a": 1}, b"payload bytes")
    header, payload = read_bundle_file(file)
    assert header["a"] == 1 and payload == b"payload bytes" and len(header["sha256"]) == 64
    raw = file.read_bytes()
    file.write_bytes(raw[:-1] + b"S")
    with pytest.raises(ValueError, match="checksum"):
        read_bundle_file(file)
    file.write_bytes(b'{"a": 1}\n' + payload)
    with pytest.raises(ValueError, match="checksum"):
        read_bundle_file(file)
