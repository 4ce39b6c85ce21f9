"""The ANN backends through their shared protocol, on synthetic unit vectors.

No images here: every backend is driven with random clustered vectors, and its answers
are checked against brute force, so a backend that loses, repeats or resurrects ids, or
returns fewer than k results while k eligible vectors exist, fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from retrieval import ann
from retrieval.ann import BACKENDS, create_index, load_index, resolve_auto
from retrieval.ann.base import AnnIndex, search_reranked
from retrieval.errors import UnknownNameError

from ..annhelpers import clustered, ids_of, trained, unit


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
    """Removed ids never come back, re-added ids carry their new vector, and a search at
    the index's max_effort returns exactly min(k, eligible) results, also with k at the
    live count and with a filter, after most of the index was deleted (tombstones, pruned
    IVF lists)."""
    name, params = VARIANTS[variant]
    vectors = clustered(2000, DIM, 20, seed=2)
    ids = np.arange(1, 2001, dtype=np.int64)
    index = create_index(name, DIM, **params)
    index.build(ids[:1500], vectors[:1500])
    index.add(ids[1500:], vectors[1500:])
    assert trained(index) == variant.endswith("trained")
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
        for row in ids_of(index.search(queries, k, effort=index.max_effort(k))):
            assert len(row) == min(k, len(live)), (k, len(row))
            assert len(set(row)) == len(row) and not removed_set & set(row)
    top = ids_of(index.search(new_vec[None], 1))[0]
    assert top == [moved], "the re-added id must be found under its new vector"

    allowed = np.concatenate([rng.choice(live, 12, replace=False), removed[:5]])
    allowed_live = set(map(int, allowed)) - removed_set
    for k in (5, 12, 40):
        for row in ids_of(index.search(queries, k, allowed, index.max_effort(k))):
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
        assert trained(index) and index.buffer.ntotal == 0 and index.index.nlist > 1
    exact = create_index("flat", DIM)
    exact.build(ids, vectors)
    rng = np.random.default_rng(5)
    queries = unit(vectors[rng.choice(4000, 40)] + 0.2 * rng.standard_normal((40, DIM)) / np.sqrt(DIM))
    lookup = lambda found: {i: store[i] for i in found}  # noqa: E731
    hits = 0
    for q in queries:
        got = [i for i, _ in search_reranked(index, q, 10, lookup)][:10]
        want = ids_of(exact.search(q[None], 10))[0]
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
    assert not trained(index) and index.ntotal == 200
    assert not index.needs_rebuild(), "a rebuild that cannot train would only repeat itself"
    index.add(ids[200:], vectors[200:])
    assert index.needs_rebuild()
    index.build(ids, vectors)
    assert trained(index) and index.ntotal == 400


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


@pytest.mark.parametrize("M", [2, 4, 8])
def test_hnsw_finds_every_vector_of_a_collection_no_larger_than_its_beam(M: int) -> None:
    """A sparse graph can leave nodes unreachable; below ef_search vectors the scan is exact."""
    from retrieval.ann import create_index

    rng = np.random.default_rng(M)
    vectors = rng.standard_normal((300, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1000, 1300, dtype=np.int64)
    index = create_index("hnsw", 64, M=M, ef_search=300)
    index.build(ids, vectors)
    index.remove(ids[:10])
    found = index.search(vectors[10:], 1)[1][:, 0]
    np.testing.assert_array_equal(found, ids[10:])


@pytest.mark.parametrize("name,params", [("ivf", {"train_min": 500, "nprobe": 2}), ("hnsw", {"M": 8, "ef_search": 16}),
                                         ("annoy", {"n_trees": 4})])
def test_a_search_is_one_attempt_and_effort_widens_it_to_exact(name: str, params: dict[str, Any]) -> None:
    """A backend does not loop: under a narrow filter, one search at effort 0 comes back
    short (the probed cells, beam or tree nodes hold too few allowed vectors), and each
    effort level finds at least as many, up to max_effort, which is the exact answer.
    The loop that chooses the effort lives in query.nearest alone."""
    vectors = clustered(3000, DIM, 30, seed=6)
    ids = np.arange(1, 3001, dtype=np.int64)
    index = create_index(name, DIM, **params)
    index.build(ids, vectors)
    allowed = ids[::97]  # 31 ids scattered over every cluster
    exact = create_index("flat", DIM)
    exact.build(ids, vectors)
    q = vectors[:1]
    k = 20
    counts = [len(ids_of(index.search(q, k, allowed, effort))[0]) for effort in range(index.max_effort(k) + 1)]
    assert counts[0] < k and counts == sorted(counts) and counts[-1] == k, counts
    at_max = ids_of(index.search(q, k, allowed, index.max_effort(k)))[0]
    assert set(at_max) == set(ids_of(exact.search(q, k, allowed))[0])
