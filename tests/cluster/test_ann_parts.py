"""The ANN index at scale: IVF and IVF-PQ filled from a Ray job's shards in parallel tasks
and merged answer as one built in one process, hold each id once, and a later local run
catches up on top; flat and HNSW are built once from the loaded vectors, without tasks."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from retrieval import Engine
from retrieval.ann import SearchIndex, create_index
from retrieval.ann.faiss_index import FaissIVF, fill_part
from retrieval.bundle.files import read_bundle_header
from retrieval.catalog import STATUS_FAILED, STATUS_OK
from retrieval.cluster import RayJob
from retrieval.cluster.ann_parts import ShardParts
from retrieval.cluster.shards import SCHEMA, shard_table
from retrieval.engine import ANN_FILE
from retrieval.errors import RetrievalError

from .. import badimages

DIM = 32


def held(index: SearchIndex) -> np.ndarray:
    """Every id the index returns for one query at its widest search, in order found: an id
    stored twice comes back twice."""
    k = index.ntotal + 8
    _, ids = index.search(np.eye(1, index.dim, dtype=np.float32), k, effort=index.max_effort(k))
    return ids[0][ids[0] >= 0]


def holds_the_catalog(index: SearchIndex, engine: Engine) -> None:
    """Assert that the index holds each of the catalog's ids once, under its stored vector."""
    ids, vectors = (np.concatenate(block) for block in zip(*engine.catalog.iter_vectors()))
    assert np.array_equal(np.sort(held(index)), ids)
    scores, found = index.search(vectors, len(ids), effort=index.max_effort(len(ids)))
    own = scores[found == ids[:, None]]  # each vector's score against its own id
    assert len(own) == len(ids) and np.allclose(own, 1.0, atol=1e-5)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write_shards(folder: Path, ids: np.ndarray, vectors: np.ndarray, shards: int) -> dict[int, tuple[str, int]]:
    """`ids`' vectors in `shards` Parquet shards, shuffled, a failed row (no vector) first
    in each; returns where each id's row lies."""
    blank = dict.fromkeys(n for n in SCHEMA.names if n != "vector")
    order = np.random.default_rng(5).permutation(len(ids))
    sources: dict[int, tuple[str, int]] = {}
    for s, part in enumerate(np.array_split(order, shards)):
        shard = str(folder / f"part-{s}.parquet")
        records = [blank | {"path": f"bad-{s}", "status": STATUS_FAILED, "error": "unreadable"}]
        records += [blank | {"path": f"img-{ids[n]}", "status": STATUS_OK} for n in part]
        pq.write_table(shard_table(records, vectors[part]), shard)
        sources.update({int(ids[n]): (shard, row) for row, n in enumerate(part, start=1)})
    return sources


@pytest.mark.parametrize("backend", ["ivf", "ivfpq"])
def test_parts_from_shards_answer_as_one_process(tmp_path: Path, local_ray: Any, backend: str) -> None:
    """Three shards filled in Ray tasks and the vectors no shard holds filled here, merged:
    the same quantiser as a build in one process (training is the build's), the same
    results probing half the cells and all of them, every id once."""
    rng = np.random.default_rng(3)
    ids = np.sort(rng.choice(100_000, 1500, replace=False)).astype(np.int64)
    vectors = _unit(rng, len(ids))
    sources = _write_shards(tmp_path, ids[:1200], vectors[:1200], 3)  # the last 300 were indexed before
    parts: list[bytes] = []

    def add_parts(trained: bytes, build_ids: np.ndarray, build_vectors: np.ndarray) -> list[bytes]:
        parts.extend(ShardParts(lambda: local_ray, sources)(trained, build_ids, build_vectors))
        return parts

    parallel, alone = (create_index(backend, DIM, nlist=16, train_min=100) for _ in range(2))
    assert isinstance(parallel, FaissIVF) and isinstance(alone, FaissIVF)
    parallel.build(ids, vectors, add_parts)
    alone.build(ids, vectors)

    assert len(parts) == 4 and parallel.ntotal == len(ids) == alone.ntotal
    assert parallel.index is not None and alone.index is not None and parallel.index.nlist == 16
    quantiser = parallel.index.quantizer.reconstruct_n(0, 16)
    assert np.array_equal(quantiser, alone.index.quantizer.reconstruct_n(0, 16))
    queries = _unit(rng, 20)
    assert parallel.max_effort(10) == alone.max_effort(10) == 1  # probing 8 cells of 16, then all
    for effort in (0, 1):
        got, want = parallel.search(queries, 10, effort=effort), alone.search(queries, 10, effort=effort)
        assert np.array_equal(got[1], want[1]) and np.allclose(got[0], want[0])
    assert np.array_equal(np.sort(held(parallel)), ids)


@pytest.mark.parametrize(("parts", "why"), [
    (lambda t, i, v: [fill_part(t, i, v), fill_part(t, i[:1], v[:1])], "1501 entries .1500 distinct"),
    (lambda t, i, v: [fill_part(t, i[1:], v[1:])], "1499 entries .1499 distinct"),
])
def test_parts_must_hold_each_id_once(parts: Callable[..., list[bytes]], why: str) -> None:
    """A part lost or filled twice is an error, not an index that misses or repeats images."""
    rng = np.random.default_rng(4)
    ids, vectors = np.arange(1500, dtype=np.int64), _unit(rng, 1500)
    index = create_index("ivf", DIM, nlist=8, train_min=100)
    assert isinstance(index, FaissIVF)
    with pytest.raises(RetrievalError, match=f"hold {why}.*expected the 1500 ids being built, each once"):
        index.build(ids, vectors, parts)


@pytest.fixture
def ann_to_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """For each parallel fill, how many parts it made and from how many shards."""
    made: list[tuple[int, int]] = []
    call = ShardParts.__call__

    def counted(self: ShardParts, *args: Any) -> list[bytes]:
        parts = call(self, *args)
        made.append((len(parts), len({shard for shard, _ in self.sources.values()})))
        return parts

    monkeypatch.setattr(ShardParts, "__call__", counted)
    yield made


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize(("backend", "params", "filled"), [
    ("ivf", {"train_min": 8}, True), ("hnsw", {}, False),
])
def test_ray_job_builds_the_index(make_engine: Callable[..., Engine], tmp_path: Path, bad_dir: Path,
                                  ann_to_ray: list[tuple[int, int]], backend: str, params: dict[str, Any],
                                  filled: bool) -> None:
    """After a Ray job, IVF is filled in parallel from the shards (one part a shard, one for
    a twin no shard row holds), HNSW built here once; either holds each catalog id once and
    is saved at the catalog's generation; a later local run catches up on that same index."""
    photos = badimages.copy_photos(tmp_path / "photos" / "cup", 5, "cup") + \
        badimages.copy_photos(tmp_path / "photos" / "dolphin", 4, "dolphin")
    shutil.copyfile(photos[0], tmp_path / "photos" / "twin.jpg")
    shutil.copyfile(sorted(bad_dir.iterdir())[0], tmp_path / "photos" / "a-bad.jpg")  # a row with no vector
    engine = make_engine(backend=backend, backend_params=params)
    report = engine.index([tmp_path / "photos"], ray=RayJob(batch_size=4))
    assert (report.embedded, report.duplicates, len(report.failed)) == (9, 1, 1)

    index = engine.ann
    if filled:  # a part a shard, and one for the twin
        assert len(ann_to_ray) == 1 and ann_to_ray[0][0] == ann_to_ray[0][1] + 1 >= 2
    else:
        assert not ann_to_ray
    assert index.name == backend and index.ntotal == len(engine) == 10
    holds_the_catalog(index, engine)
    header = read_bundle_header(engine.path / ANN_FILE)
    assert header is not None and (header["generation"], header["count"]) == (engine.catalog.generation(), 10)

    badimages.copy_photos(tmp_path / "photos" / "chair", 2, "chair")
    engine.index([tmp_path / "photos"])
    assert engine.ann is index and index.ntotal == len(engine) == 12  # caught up, not rebuilt
    holds_the_catalog(index, engine)
    if filled:
        assert isinstance(index, FaissIVF) and index.trained_on == 10
