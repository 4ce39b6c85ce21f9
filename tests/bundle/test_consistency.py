"""Consistency across processes: a reader beside a writer that adds and deletes, a
writer that crashes while saving the ANN index, and a reader beside a real `retrieve
index` process.

The first two run on synthetic bundles (stub extractor, vectors written as ingest
writes them), so the writer can commit many times a second and the races actually
happen; the last indexes real photos.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import retrieval.bundle.ann_cache
from retrieval import Engine
from retrieval.engine import ANN_FILE

from ..annhelpers import StubExtractor, synthetic_bundle, unit
from ..conftest import caltech_slice
from ..processhelpers import catalog_rows, copy_images, index_command

ROOT = Path(__file__).resolve().parents[2]
DIM = 32
PARAMS = {"flat": {}, "ivf": {"train_min": 200, "nprobe": 2}, "hnsw": {"M": 8, "ef_search": 16},
          "annoy": {"n_trees": 4}}


def _child(code: str, *args: str) -> subprocess.Popen[bytes]:
    """Run `code` in a fresh interpreter with the repo importable and argv = args."""
    prelude = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _no_build(*args: object, **kwargs: object) -> None:
    """Stands in for the index factory where a saved index must be loaded, not rebuilt."""
    raise AssertionError("an ANN index was built where the saved one should have loaded")


def _layout(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, stable, filler): 10 stable images ~0.99 similar to the query, 200 unrelated."""
    rng = np.random.default_rng(seed)
    q = unit(rng.standard_normal(DIM))
    stable = unit(q + 0.1 * rng.standard_normal((10, DIM)) / np.sqrt(DIM))
    filler = unit(rng.standard_normal((200, DIM)))
    return q, stable, filler


# The writer adds 30 "churn" images (~0.9 similar to the query: they rank right after the
# stable ones) and then removes the previous 30, 12 times; after each commit it logs the
# ids it removed, so the reader knows which ids may never appear again.
WRITER = """
    import json, os
    from pathlib import Path
    import numpy as np
    from retrieval import Engine
    from tests.annhelpers import StubExtractor, commit, synthetic_records, unit
    bundle, log = Path(sys.argv[1]), Path(sys.argv[2])
    q = np.array(json.loads(sys.argv[3]), np.float32)
    rng = np.random.default_rng(7)
    with Engine.open(bundle, extractor=StubExtractor(len(q))) as engine:
        previous = []
        for round in range(12):
            churn = unit(q + 0.6 * rng.standard_normal((30, len(q))) / np.sqrt(len(q)))
            ids = commit(engine, synthetic_records(churn, seed=round, start=10_000 + 30 * round))
            engine.remove(previous)
            with open(log, "a") as f:
                f.write(json.dumps(previous) + "\\n")
                f.flush()
                os.fsync(f.fileno())
            previous = ids
"""


@pytest.mark.parametrize("backend", list(PARAMS))
def test_reader_never_sees_a_removed_image_or_misses_a_live_one(tmp_path: Path, backend: str) -> None:
    q, stable, filler = _layout(seed=40)
    s = synthetic_bundle(tmp_path / "bundle", np.concatenate([stable, filler]), backend, PARAMS[backend])
    stable_ids = set(sorted(s.vectors)[:10])
    s.engine.close()
    log = tmp_path / "removed.jsonl"
    log.touch()
    writer = _child(WRITER, str(s.engine.path), str(log), str(q.tolist()))
    searches = 0
    with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as reader:
        while True:
            finished = writer.poll() is not None
            removed = {i for line in log.read_text().splitlines() for i in json.loads(line)}
            top = reader.search(q, k=10)
            assert {h.id for h in top} == stable_ids, "a stable image went missing"
            wide = reader.search(q, k=40)
            assert len(wide) == 40 and stable_ids <= {h.id for h in wide}
            assert not {h.id for h in wide} & removed, "a removed image came back"
            if searches % 5 == 0:  # a fresh process view: loads the saved file while it is rewritten
                with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as fresh:
                    seen = {h.id for h in fresh.search(q, k=40)}
                    assert stable_ids <= seen and not seen & removed
            searches += 1
            if finished:
                break
    assert writer.returncode == 0, writer.stderr.read().decode()[-800:]
    assert len(log.read_text().splitlines()) == 12
    assert searches >= 5, "the reader should have searched while the writer worked"


# Crashes inside save_atomic: after writing the temp file but before the rename, or
# with the temp file half written (as a power cut during write would leave it).
CRASHER = """
    import os
    from pathlib import Path
    from retrieval import Engine
    from tests.annhelpers import StubExtractor
    bundle, mode = Path(sys.argv[1]), sys.argv[2]

    def crash_before_rename(src, dst):
        os._exit(9)

    def crash_mid_write(fd):
        os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) // 2)
        os._exit(9)

    if mode == "before-rename":
        os.replace = crash_before_rename
    else:
        os.fsync = crash_mid_write
    with Engine.open(bundle, extractor=StubExtractor(int(sys.argv[3]))) as engine:
        engine.remove(range(1, 101))
"""


@pytest.mark.parametrize("backend", ["hnsw", "annoy", "ivf"])
@pytest.mark.parametrize("mode", ["before-rename", "mid-write"])
def test_a_crash_while_saving_leaves_the_previous_index_loadable(tmp_path: Path, backend: str, mode: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _, stable, filler = _layout(seed=41)
    s = synthetic_bundle(tmp_path / "bundle", np.concatenate([stable, filler]), backend, PARAMS[backend])
    s.engine.close()
    index_file = s.engine.path / ANN_FILE
    before = hashlib.sha256(index_file.read_bytes()).hexdigest()

    crasher = _child(CRASHER, str(s.engine.path), mode, str(DIM))
    assert crasher.wait(timeout=120) == 9, crasher.stderr.read().decode()[-800:]
    assert hashlib.sha256(index_file.read_bytes()).hexdigest() == before, "the saved index was touched"
    leftovers = list(s.engine.path.glob(ANN_FILE + ".*.tmp"))
    assert len(leftovers) == 1

    with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as engine:
        with monkeypatch.context() as m:  # the previous file must load as it is, not be rebuilt
            m.setattr(retrieval.bundle.ann_cache, "create_index", _no_build)
            index = engine.ann
        assert index.ntotal == 110, "and catch up with the removals the catalog committed"
        assert hashlib.sha256(index_file.read_bytes()).hexdigest() == before, "a reader rewrote the index"
        for i in (1, 50, 150):
            hits = [h.id for h in engine.search(s.vectors[i], k=120)]
            assert len(hits) == 110 and min(hits) > 100, "a removed image came back"
            if i > 100:  # a live image finds itself first
                assert hits[0] == i
        engine.remove([150])  # a writer: taking the lock clears the crashed save's temp file
    assert not list(s.engine.path.glob(ANN_FILE + ".*.tmp"))
    saved = index_file.read_bytes()
    with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as engine, monkeypatch.context() as m:
        m.setattr(retrieval.bundle.ann_cache, "create_index", _no_build)  # the writer's save loads as it is
        assert engine.ann.ntotal == 109
    assert index_file.read_bytes() == saved


def test_a_second_process_queries_while_another_adds(tmp_path: Path, make_engine, sample_dir: Path,
                                                      extractor) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    query_vec = engine.vectors([1])[0]
    engine.close()
    more = copy_images(caltech_slice(per_class=6, classes=16), tmp_path / "more")
    writer = subprocess.Popen(index_command(more, engine.path, "-q"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    counts = []
    with Engine.open(engine.path, extractor=extractor) as reader:
        while True:
            finished = writer.poll() is not None
            hits = reader.search(query_vec, k=20)
            assert len(hits) == 20
            live = {i for i, _ in catalog_rows(engine.path).values()}
            assert {h.id for h in hits} <= live
            counts.append(reader.ann.ntotal)
            if finished:
                break
            time.sleep(0.2)
    assert writer.returncode == 0, writer.stderr.read().decode()[-500:]
    assert counts[-1] == 50 + 96
    assert len(set(counts)) > 2, f"the reader should have seen the index grow: {counts}"
    assert np.all(np.diff(counts) >= 0)
