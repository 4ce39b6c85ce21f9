"""GPU selection (retrieval/ann/gpu.py and the FAISS backends): a GPU mirror only when
FAISS reports a GPU, remade after each change; and silence on a machine without one.

faiss-gpu is simulated: its clones are CPU indexes that count their searches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pytest

from retrieval.ann import create_index, faiss_index

from ..annhelpers import clustered, ids_of

DIM = 32


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
            assert len(ids_of(index.search(vectors[:2], 5))[0]) == 5
    assert not [r for r in caplog.records if "GPU" in r.getMessage()]
