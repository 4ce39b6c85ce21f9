"""The ANN backends through their shared protocol, on synthetic unit vectors.

No images here: every backend is driven with random clustered vectors, and its answers
are checked against brute force, so a backend that loses, repeats or resurrects ids, or
returns fewer than k results while k eligible vectors exist, fails.
"""

from __future__ import annotations

import logging
import tracemalloc
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pytest

from retrieval import ann
from retrieval.ann import BACKENDS, create_index, load_index, resolve_auto
from retrieval.ann import faiss_index
from retrieval.ann.base import AnnIndex, search_reranked
from retrieval.duplicates import near_groups
from retrieval.errors import UnknownNameError

from .annhelpers import clustered, unit

DIM = 32

# (backend, params): the IVF variants with a small train_min exercise the trained path.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "flat": ("flat", {}),
    "ivf-buffer": ("ivf", {}),
    "ivf-trained": ("ivf", {"train_min": 400, "nprobe": 2}),
    "ivfpq-buffer": ("ivfpq", {}),
    "ivfpq-trained": ("ivfpq", {"train_min": 600, "nprobe": 2}),
    "hnsw": ("hnsw", {"M": 8, "ef_search": 16}),
    "annoy": ("annoy", {"n_trees": 8}),
}


def _ids_of(result: tuple[np.ndarray, np.ndarray]) -> list[list[int]]:
    return [[int(i) for i in row if i >= 0] for row in result[1]]


def _trained(index: AnnIndex) -> bool:
    """An IVF index past its exact buffer stage (other backends never train)."""
    return isinstance(index, faiss_index.FaissIVF) and index.index is not None


@pytest.mark.parametrize("name", list(BACKENDS))
def test_backend_follows_the_protocol_and_keeps_its_parameters(name: str) -> None:
    """Every backend is an AnnIndex whose chosen parameters survive a save and load."""
    custom = {"flat": {}, "ivf": {"nlist": 7, "nprobe": 3, "train_min": 123},
              "ivfpq": {"nlist": 5, "pq_m": 4, "train_min": 300}, "hnsw": {"M": 12, "ef_search": 33},
              "annoy": {"n_trees": 5, "search_k": 777}}[name]
    index = create_index(name, DIM, **custom)
    assert isinstance(index, AnnIndex) and index.name == name and index.dim == DIM
    assert custom.items() <= index.params().items()
    vectors = clustered(300, DIM, 6, seed=1)
    ids = np.arange(10, 310, dtype=np.int64)
    index.build(ids, vectors)
    assert index.ntotal == 300
    loaded = load_index(name, DIM, index.to_bytes(), index.params())
    assert loaded.params() == index.params() and loaded.ntotal == 300
    q = vectors[:5]
    np.testing.assert_array_equal(index.search(q, 10)[1], loaded.search(q, 10)[1])
    with pytest.raises(UnknownNameError):
        create_index("nope", DIM)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_updates_and_deletes_never_lose_or_resurrect_ids(variant: str) -> None:
    """Removed ids never come back, re-added ids carry their new vector, and a search
    returns exactly min(k, eligible) results, also with k at the live count and with a
    filter, after most of the index was deleted (tombstones, pruned IVF lists)."""
    name, params = VARIANTS[variant]
    vectors = clustered(2000, DIM, 20, seed=2)
    ids = np.arange(1, 2001, dtype=np.int64)
    index = create_index(name, DIM, **params)
    index.build(ids[:1500], vectors[:1500])
    index.add(ids[1500:], vectors[1500:])
    assert _trained(index) == variant.endswith("trained")
    rng = np.random.default_rng(3)
    removed = rng.choice(ids, 1700, replace=False)
    for chunk in np.array_split(removed, 5):
        index.remove(chunk)
    index.remove(np.array([99_999, int(removed[0])]))  # unknown and already-removed ids are ignored
    live = np.setdiff1d(ids, removed)
    assert index.ntotal == len(live) == 300

    # an update: remove then re-add an id with another vector (what an edited file does):
    # here, close to a removed image's, so only the re-added id can be the top hit
    moved = int(live[0])
    new_vec = unit(vectors[int(removed[1]) - 1] + 0.05 * rng.standard_normal(DIM) / np.sqrt(DIM))
    index.remove(np.array([moved]))
    index.add(np.array([moved]), new_vec[None])
    assert index.ntotal == 300

    queries = unit(vectors[rng.choice(2000, 8)] + 0.1 * rng.standard_normal((8, DIM)))
    removed_set = set(map(int, removed))
    for k in (10, len(live) - 1, len(live), len(live) + 7):
        for row in _ids_of(index.search(queries, k)):
            assert len(row) == min(k, len(live)), (k, len(row))
            assert len(set(row)) == len(row) and not removed_set & set(row)
    top = _ids_of(index.search(new_vec[None], 1))[0]
    assert top == [moved], "the re-added id must be found under its new vector"

    allowed = np.concatenate([rng.choice(live, 12, replace=False), removed[:5]])
    allowed_live = set(map(int, allowed)) - removed_set
    for k in (5, 12, 40):
        for row in _ids_of(index.search(queries, k, allowed)):
            assert len(row) == min(k, len(allowed_live)) and set(row) <= allowed_live, (k, row)


@pytest.mark.parametrize("name,params,min_recall", [
    ("ivf", {"train_min": 1000}, 0.9),
    ("ivfpq", {"train_min": 1000, "pq_m": 8}, 0.8),
    ("hnsw", {}, 0.9),
    ("annoy", {"n_trees": 16}, 0.9),
])
def test_approximate_backends_recall_against_exact(name: str, params: dict[str, Any], min_recall: float) -> None:
    """The trained IVF paths (and the graph/tree indexes) find most of the exact top 10
    once re-ranked with the stored vectors, as the Engine does."""
    vectors = clustered(4000, DIM, 40, seed=4)
    ids = np.arange(100, 4100, dtype=np.int64)
    store = dict(zip(map(int, ids), vectors))
    index = create_index(name, DIM, **params)
    index.build(ids, vectors)
    if name.startswith("ivf"):
        assert _trained(index) and index.buffer.ntotal == 0 and index.index.nlist > 1
    exact = create_index("flat", DIM)
    exact.build(ids, vectors)
    rng = np.random.default_rng(5)
    queries = unit(vectors[rng.choice(4000, 40)] + 0.2 * rng.standard_normal((40, DIM)) / np.sqrt(DIM))
    lookup = lambda found: {i: store[i] for i in found}  # noqa: E731
    hits = 0
    for q in queries:
        got = [i for i, _ in search_reranked(index, q, 10, lookup)][:10]
        want = _ids_of(exact.search(q[None], 10))[0]
        assert len(got) == 10
        hits += len(set(got) & set(want))
    assert hits / (10 * len(queries)) >= min_recall


def test_ivfpq_with_a_small_train_min_waits_for_enough_vectors_to_train() -> None:
    """PQ codebooks need 256 training points; a smaller train_min must not make every
    write fail: the exact buffer is kept until the codebooks can be trained."""
    vectors = clustered(400, DIM, 4, seed=6)
    ids = np.arange(1, 401, dtype=np.int64)
    index = create_index("ivfpq", DIM, train_min=50, pq_m=4)
    index.build(ids[:200], vectors[:200])
    assert not _trained(index) and index.ntotal == 200
    assert not index.needs_rebuild(), "a rebuild that cannot train would only repeat itself"
    index.add(ids[200:], vectors[200:])
    assert index.needs_rebuild()
    index.build(ids, vectors)
    assert _trained(index) and index.ntotal == 400


def test_rebuild_is_requested_after_many_deletes_or_growth() -> None:
    """HNSW and Annoy cannot delete, IVF cannot retrain: each says when to rebuild."""
    vectors = clustered(1500, DIM, 10, seed=7)
    ids = np.arange(1, 1501, dtype=np.int64)
    for name, params in [("hnsw", {"M": 8}), ("annoy", {"n_trees": 4})]:
        index = create_index(name, DIM, **params)
        index.build(ids[:1000], vectors[:1000])
        index.remove(ids[:150])
        assert not index.needs_rebuild(), name
        index.remove(ids[150:300])
        assert index.needs_rebuild(), name
    annoy = create_index("annoy", DIM, n_trees=4)
    annoy.build(ids[:100], vectors[:100])
    annoy.add(ids[100:], vectors[100:])  # 1400 buffered > max(1000, 100 // 10)
    assert annoy.needs_rebuild()
    ivf = create_index("ivf", DIM, train_min=200)
    ivf.build(ids[:250], vectors[:250])
    ivf.add(ids[250:1000], vectors[250:1000])
    assert not ivf.needs_rebuild()
    ivf.add(ids[1000:], vectors[1000:])  # 1500 > 4 x 250 trained on
    assert ivf.needs_rebuild()
    buffered = create_index("ivf", DIM, train_min=500)
    buffered.build(ids[:499], vectors[:499])
    assert not buffered.needs_rebuild()
    buffered.add(ids[499:501], vectors[499:501])
    assert buffered.needs_rebuild()


def test_auto_picks_exact_then_hnsw_then_ivfpq_by_size_and_memory() -> None:
    """auto: exact while small, HNSW while it fits in half the free memory, else IVF-PQ."""
    assert resolve_auto(ann.AUTO_EXACT_BELOW - 1, 1280, available_bytes=1 << 40) == "flat"
    n = 1_000_000
    needed = n * (1280 * 4 + 32 * 2 * 8)
    assert resolve_auto(n, 1280, available_bytes=2 * needed + 1) == "hnsw"
    assert resolve_auto(n, 1280, available_bytes=2 * needed - 1) == "ivfpq"


# ---------------------------------------------------------------------- GPU selection


@dataclass
class _FakeGpu:
    """Stands in for faiss-gpu: clones are CPU indexes that count their searches."""

    clones: int = 0
    searches: int = 0
    trains: int = 0
    nprobes: list[int] | None = None
    fail: bool = False

    def install(self, monkeypatch: pytest.MonkeyPatch, gpus: int) -> None:
        fake = self
        self.nprobes = []

        class Clone:
            def __init__(self, index: faiss.Index) -> None:
                self.index, self.ntotal = index, index.ntotal

            def search(self, x: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
                fake.searches += 1
                return self.index.search(x, k, params=params)

            def train(self, x: np.ndarray) -> None:
                fake.trains += 1
                self.index.train(x)

            def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> None:
                self.index.add_with_ids(x, ids)
                self.ntotal = self.index.ntotal

        def to_gpu(resources: object, device: int, index: faiss.Index) -> Clone:
            if fake.fail:
                raise RuntimeError("not supported on the GPU")
            fake.clones += 1
            return Clone(index)

        class ParameterSpace:
            def set_index_parameter(self, index: Clone, name: str, value: int) -> None:
                assert name == "nprobe"
                fake.nprobes.append(value)
                index.index.nprobe = value

        monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
        monkeypatch.setattr(faiss, "GpuParameterSpace", ParameterSpace, raising=False)
        monkeypatch.setattr(faiss, "get_num_gpus", lambda: gpus)
        monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
        monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda clone: clone.index, raising=False)


def test_gpu_mirror_is_used_only_when_faiss_reports_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a GPU build that sees a GPU, flat and IVF searches go to a clone that is
    remade after each change; filtered searches and HNSW stay on the CPU."""
    vectors = clustered(600, DIM, 6, seed=8)
    ids = np.arange(1, 601, dtype=np.int64)
    gpu = _FakeGpu()
    gpu.install(monkeypatch, gpus=0)
    assert not faiss_index.gpu_available()
    flat = create_index("flat", DIM)
    flat.build(ids, vectors)
    flat.search(vectors[:2], 5)
    assert gpu.clones == 0, "no GPU reported: the CPU index must be searched"

    gpu.install(monkeypatch, gpus=1)
    assert faiss_index.gpu_available()
    expected = flat.index.search(vectors[:3], 5)[1]
    np.testing.assert_array_equal(flat.search(vectors[:3], 5)[1], expected)
    flat.search(vectors[:3], 5)
    assert (gpu.clones, gpu.searches) == (1, 2), "one clone, reused while nothing changes"
    flat.remove(ids[:1])
    assert 1 not in flat.search(vectors[:1], 5)[1]
    assert gpu.clones == 2, "a change invalidates the clone"
    flat.search(vectors[:1], 5, allowed=ids[10:20])
    assert gpu.searches == 3, "filtered searches use CPU-only selectors"

    ivf = create_index("ivf", DIM, train_min=300, nprobe=3)
    ivf.build(ids, vectors)
    assert (gpu.clones, gpu.trains) == (3, 1), "IVF is trained and filled on the GPU"
    ivf.search(vectors[:2], 5)
    assert gpu.clones == 3 and gpu.nprobes == [3], "the clone made by the build serves the search"
    hnsw = create_index("hnsw", DIM)
    hnsw.build(ids, vectors)
    hnsw.search(vectors[:2], 5)
    assert gpu.clones == 3, "HNSW is never cloned to the GPU"

    gpu.fail = True
    fresh = create_index("flat", DIM)
    fresh.build(ids, vectors)
    np.testing.assert_array_equal(fresh.search(vectors[:3], 5)[1], expected)
    on_cpu = create_index("ivf", DIM, train_min=300, nprobe=3)
    on_cpu.build(ids, vectors)  # the GPU refuses: built on the CPU, the same index
    assert gpu.trains == 1
    np.testing.assert_array_equal(on_cpu.search(vectors[:9], 5)[1], ivf.search(vectors[:9], 5)[1])


def test_without_a_gpu_every_backend_runs_on_the_cpu_silently(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """This machine has no GPU: nothing may try to clone to one, and nothing is logged."""
    assert not faiss_index.gpu_available()

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("a GPU clone was attempted without a GPU")

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", forbidden, raising=False)
    vectors = clustered(500, DIM, 5, seed=9)
    ids = np.arange(1, 501, dtype=np.int64)
    with caplog.at_level(logging.DEBUG, logger="retrieval"):
        for name, params in [("flat", {}), ("ivf", {"train_min": 200}), ("ivfpq", {"train_min": 300}),
                             ("hnsw", {}), ("annoy", {"n_trees": 4})]:
            index = create_index(name, DIM, **params)
            index.build(ids, vectors)
            assert len(_ids_of(index.search(vectors[:2], 5))[0]) == 5
    assert not [r for r in caplog.records if "GPU" in r.getMessage()]


# ---------------------------------------------------------------------- duplicates at scale


class _VectorCatalog:
    """The catalog reads near_groups needs, over in-memory vectors."""

    @dataclass
    class Row:
        path: str
        content_hash: str

    def __init__(self, vectors: np.ndarray, hashes: list[str]) -> None:
        self.vectors_, self.hashes = vectors, hashes

    def iter_vectors(self, batch: int = 10_000):
        for start in range(0, len(self.vectors_), batch):
            stop = min(start + batch, len(self.vectors_))
            yield np.arange(start + 1, stop + 1, dtype=np.int64), self.vectors_[start:stop]

    def rows_by_id(self, ids):
        return {int(i): self.Row(f"/img/{int(i)}.jpg", self.hashes[int(i) - 1]) for i in ids}

    def vectors(self, ids):
        return {int(i): self.vectors_[int(i) - 1] for i in ids}


class _CountingIndex:
    """Wraps an index to record the shape of every search near_groups makes."""

    def __init__(self, index: AnnIndex) -> None:
        self.inner, self.calls = index, []
        self.exact, self.ntotal, self.rerank = index.exact, index.ntotal, index.rerank

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
        self.calls.append((len(queries), k))
        return self.inner.search(queries, k, allowed)


def test_near_duplicates_of_20k_vectors_without_an_n_by_n_matrix() -> None:
    """Planted pairs and triples (some byte-identical) are found exactly, in blocks of
    few-neighbour searches, with memory far below an N x N similarity matrix."""
    n, dim = 20_000, 48
    rng = np.random.default_rng(10)
    vectors = unit(rng.standard_normal((n, dim)))
    hashes = [f"h{i}" for i in range(n)]
    members = rng.permutation(n)[:700]
    planted: list[tuple[int, ...]] = []
    pos = 0
    for g in range(250):
        size = 3 if g % 10 == 0 else 2
        group = [int(i) for i in members[pos:pos + size]]
        pos += size
        head = group[0]
        for other in group[1:]:
            if g % 4 == 0:  # a byte-identical copy
                vectors[other], hashes[other] = vectors[head], hashes[head]
            else:
                vectors[other] = unit(vectors[head] + 0.2 * rng.standard_normal(dim) / np.sqrt(dim))
        planted.append(tuple(sorted(i + 1 for i in group)))
    index = create_index("flat", dim)
    index.build(np.arange(1, n + 1, dtype=np.int64), vectors)
    counting = _CountingIndex(index)
    catalog = _VectorCatalog(vectors, hashes)
    tracemalloc.start()
    try:
        groups = near_groups(catalog, counting, threshold=0.9, block=2048)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(g.ids for g in groups) == sorted(planted)
    exact_expected = {planted[g] for g in range(250) if g % 4 == 0}
    assert {g.ids for g in groups if g.exact} == exact_expected
    assert all(g.score >= 0.9 for g in groups)
    assert all(q <= 2048 and k <= 17 for q, k in counting.calls) and sum(q for q, _ in counting.calls) == n
    assert peak < n * n * 4 / 20, f"peak {peak / 1e6:.0f} MB: looks like an N x N matrix"


def test_near_duplicates_use_exact_similarity_on_a_compressed_index() -> None:
    """IVF-PQ scores are coarse; duplicate groups and their scores must come from the
    stored vectors, so a pair below the threshold is never grouped and one above is."""
    n, dim = 3000, DIM
    rng = np.random.default_rng(11)
    vectors = clustered(n, dim, 30, seed=11, spread=0.6)
    hashes = [f"h{i}" for i in range(n)]
    close = (0, 1)
    vectors[1] = unit(vectors[0] + 0.15 * rng.standard_normal(dim) / np.sqrt(dim))
    vectors[3] = unit(vectors[2] + 0.9 * rng.standard_normal(dim) / np.sqrt(dim))
    threshold = float(vectors[0] @ vectors[1] + vectors[2] @ vectors[3]) / 2
    index = create_index("ivfpq", dim, train_min=1000, pq_m=4)
    index.build(np.arange(1, n + 1, dtype=np.int64), vectors)
    assert _trained(index)
    groups = near_groups(_VectorCatalog(vectors, hashes), index, threshold=threshold)  # type: ignore[arg-type]
    exact = vectors @ vectors.T
    np.fill_diagonal(exact, -1)
    for g in groups:
        ids = [i - 1 for i in g.ids]
        linked = all(max(exact[i][j] for j in ids if j != i) >= threshold for i in ids)
        assert linked, f"group {g.ids} holds an image below the threshold to all others"
        assert g.score >= threshold
    grouped = {i for g in groups for i in g.ids}
    assert {close[0] + 1, close[1] + 1} <= grouped
