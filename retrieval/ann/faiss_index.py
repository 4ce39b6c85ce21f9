"""FAISS backends: exact (flat), inverted lists (IVF-Flat, IVF-PQ) and HNSW.

All use inner product on unit vectors and are keyed by catalog ids. With faiss-gpu
installed and a GPU visible, IVF indexes are trained and filled on the GPU, and flat and
IVF searches run there (on a clone made after the last change); the CPU index stays the
one saved. HNSW (no GPU version in FAISS), IVF-PQ code sizes the GPU does not take, and
every machine without a GPU use the CPU, silently.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import faiss
import numpy as np

from .base import pack, unpack

__all__ = ["FaissFlat", "FaissIVF", "FaissHNSW", "gpu_available"]

log = logging.getLogger(__name__)

TRAIN_SAMPLE = 200_000  # k-means training points for IVF, unless 39 a cell needs more


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class _GpuMirror:
    """A GPU clone of a CPU index for searching, rebuilt lazily after each change."""

    def __init__(self) -> None:
        self._clone: faiss.Index | None = None
        self._resources: Any = None

    def invalidate(self) -> None:
        self._clone = None

    def get(self, index: faiss.Index) -> faiss.Index:
        if not gpu_available() or index.ntotal == 0:
            return index
        if self._clone is None:
            try:
                self._resources = self._resources or faiss.StandardGpuResources()
                self._clone = faiss.index_cpu_to_gpu(self._resources, 0, index)
            except RuntimeError as e:  # an index type the GPU does not support: stay on the CPU
                log.debug("GPU clone failed (%s); searching on the CPU", e)
                return index
        return self._clone

    def build(self, index: faiss.Index, train: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
        """Train `index` on `train` and add the vectors: on the GPU when there is one (k-means
        and assigning every vector to a cell are the slow part), else on the CPU. Returns the
        CPU index; the GPU one is kept as the search clone."""
        if gpu_available():
            try:
                self._resources = self._resources or faiss.StandardGpuResources()
                gpu = faiss.index_cpu_to_gpu(self._resources, 0, index)
                gpu.train(train)
                gpu.add_with_ids(vectors, ids)
                self._clone = gpu
                return faiss.index_gpu_to_cpu(gpu)
            except RuntimeError as e:  # e.g. a PQ code size the GPU does not support
                log.debug("GPU build failed (%s); building on the CPU", e)
                self._clone = None
        index.train(train)
        index.add_with_ids(vectors, ids)
        return index


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32)


def _i64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.int64)


def _serialize(index: faiss.Index) -> np.ndarray:
    return faiss.serialize_index(index)


def _deserialize(blob: np.ndarray) -> faiss.Index:
    return faiss.deserialize_index(np.ascontiguousarray(blob, np.uint8))


class FaissFlat:
    """Exact search: the reference every approximate backend is measured against."""

    name = "flat"
    exact = True
    rerank = 1

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._gpu = _GpuMirror()

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def params(self) -> dict[str, Any]:
        return {}

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.reset()
        self.add(ids, vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(_f32(vectors), _i64(ids))
            self._gpu.invalidate()

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) and self.index.remove_ids(_i64(ids)):
            self._gpu.invalidate()

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, k)
        if allowed is not None:  # selectors are CPU-only in FAISS
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(_i64(allowed)))
            return self.index.search(_f32(queries), k, params=params)
        return self._gpu.get(self.index).search(_f32(queries), k)

    def needs_rebuild(self) -> bool:
        return False

    def to_bytes(self) -> bytes:
        return _serialize(self.index).tobytes()

    @classmethod
    def from_bytes(cls, dim: int, payload: bytes, params: dict[str, Any]) -> FaissFlat:
        return cls(dim, _deserialize(np.frombuffer(payload, np.uint8)))


class FaissIVF:
    """Inverted lists over k-means cells, with flat or product-quantised codes.

    Until enough vectors exist to train the quantiser (`train_min`), everything lives
    in an exact buffer, so a small or new collection is searched exactly. `nlist`
    defaults to ~4 sqrt(N) at (re)build time; the index asks to be rebuilt when the
    collection has grown 4x beyond what it was trained on.
    """

    exact = False

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int | None = None,
                 pq_m: int | None = None, train_min: int = 10_000) -> None:
        self.dim = dim
        self.name = "ivfpq" if pq_m is not None else "ivf"
        self.rerank = 16 if pq_m is not None else 2  # PQ distances are coarse; re-rank deeper
        self.nlist, self.nprobe, self.pq_m, self.train_min = nlist, nprobe, pq_m, train_min
        self.index: faiss.Index | None = None
        self.trained_on = 0
        self.buffer = FaissFlat(dim)
        self._gpu = _GpuMirror()

    @property
    def ntotal(self) -> int:
        return self.buffer.ntotal + (int(self.index.ntotal) if self.index is not None else 0)

    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "pq_m": self.pq_m, "train_min": self.train_min}

    def _resolved(self, n: int) -> tuple[int, int]:
        nlist = self.nlist or int(min(65536, max(16, 4 * math.sqrt(n))))
        nlist = max(1, min(nlist, n // 39))  # FAISS wants >= 39 training points per cell
        nprobe = self.nprobe or max(8, min(256, nlist // 8))
        return nlist, nprobe

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.buffer = FaissFlat(self.dim)
        self.index, self._gpu = None, _GpuMirror()
        if len(ids) < self._trainable_from():
            self.buffer.add(ids, vectors)
            return
        nlist, _ = self._resolved(len(ids))
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.pq_m is None:
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        # k-means wants 39 to 256 points a cell; beyond ~200k points more barely moves the
        # centroids but costs minutes (a 1M collection would train on all of it).
        wanted = min(len(ids), max(nlist * 39, min(nlist * 256, TRAIN_SAMPLE)))
        sample = np.random.default_rng(0).choice(len(ids), wanted, replace=False)
        self.index = self._gpu.build(index, _f32(vectors[np.sort(sample)]), _f32(vectors), _i64(ids))
        self.trained_on = len(ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.index is None:
            self.buffer.add(ids, vectors)
        elif len(ids):
            self.index.add_with_ids(_f32(vectors), _i64(ids))
            self._gpu.invalidate()

    def remove(self, ids: np.ndarray) -> None:
        self.buffer.remove(ids)
        if self.index is not None and len(ids) and self.index.remove_ids(_i64(ids)):
            self._gpu.invalidate()

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None:
            return self.buffer.search(queries, k, allowed)
        _, nprobe = self._resolved(self.trained_on)
        nprobe = min(nprobe, self.index.nlist)
        k = max(1, k)
        # Probed cells can hold fewer than k live (or allowed) vectors, after many deletes or
        # under a narrow filter: probe twice as many cells until every row is full or all
        # cells were scanned, which is exact. The common case searches once.
        wanted = min(k, self.ntotal)
        while True:
            scores, ids = self._search_cells(queries, k, nprobe, allowed)
            if nprobe >= self.index.nlist or bool(((ids >= 0).sum(axis=1) >= wanted).all()):
                return scores, ids
            nprobe = min(2 * nprobe, self.index.nlist)

    def _search_cells(self, queries: np.ndarray, k: int, nprobe: int,
                      allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        assert self.index is not None
        if allowed is not None:
            params = faiss.SearchParametersIVF(nprobe=nprobe, sel=faiss.IDSelectorBatch(_i64(allowed)))
            return self.index.search(_f32(queries), k, params=params)
        index = self._gpu.get(self.index)
        if index is self.index:
            return index.search(_f32(queries), k, params=faiss.SearchParametersIVF(nprobe=nprobe))
        faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
        return index.search(_f32(queries), k)

    def needs_rebuild(self) -> bool:
        if self.index is None:
            return self.buffer.ntotal >= self._trainable_from()
        return self.ntotal > 4 * self.trained_on

    def _trainable_from(self) -> int:
        """Vectors needed before training: train_min, and never fewer than the 256 points
        that PQ codebooks (8 bits a code) need, so a small train_min cannot make writes fail."""
        return max(self.train_min, 256) if self.pq_m is not None else self.train_min

    def to_bytes(self) -> bytes:
        arrays = {"buffer": np.frombuffer(self.buffer.to_bytes(), np.uint8),
                  "trained_on": np.array(self.trained_on)}
        if self.index is not None:
            arrays["index"] = _serialize(self.index)
        return pack(arrays)

    @classmethod
    def from_bytes(cls, dim: int, payload: bytes, params: dict[str, Any]) -> FaissIVF:
        obj = cls(dim, **params)
        arrays = unpack(payload)
        obj.buffer = FaissFlat.from_bytes(dim, arrays["buffer"].tobytes(), {})
        obj.trained_on = int(arrays["trained_on"])
        if "index" in arrays:
            obj.index = _deserialize(arrays["index"])
        return obj


class FaissHNSW:
    """A graph index: fast and accurate, but FAISS cannot delete from it.

    Deleted vectors become tombstones that the search skips (an ID selector, so k
    live results still come back); when over a fifth of the graph is dead, the index
    asks to be rebuilt. FAISS numbers HNSW vectors by position; `labels` maps
    positions to catalog ids. `ef_search` 256 (not FAISS's 16, nor 128) is what keeps
    recall@10 above 0.95 at a million real-like vectors: 0.949 at 128, 0.978 at 256,
    for 1.0 -> 1.4 ms a query on 2 cores (scripts/bench_ann.py).
    """

    name = "hnsw"
    exact = False
    rerank = 2

    def __init__(self, dim: int, M: int = 32, ef_construction: int = 80, ef_search: int = 256) -> None:
        self.dim, self.M, self.ef_construction, self.ef_search = dim, M, ef_construction, ef_search
        self._reset()

    def _reset(self) -> None:
        self.index = faiss.IndexHNSWFlat(self.dim, self.M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.ef_construction
        self.labels = np.empty(0, np.int64)
        self.position: dict[int, int] = {}
        self.dead = np.zeros(0, bool)

    @property
    def ntotal(self) -> int:
        return len(self.position)

    def params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._reset()
        self.add(ids, vectors)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        start = len(self.labels)
        self.index.add(_f32(vectors))
        self.labels = np.concatenate([self.labels, _i64(ids)])
        self.dead = np.concatenate([self.dead, np.zeros(len(ids), bool)])
        self.position.update({int(i): start + n for n, i in enumerate(ids)})

    def remove(self, ids: np.ndarray) -> None:
        for i in ids:
            pos = self.position.pop(int(i), None)
            if pos is not None:
                self.dead[pos] = True

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        k, queries = max(1, k), _f32(queries)
        wanted = min(k, self.ntotal)
        if allowed is not None:
            pos = np.fromiter((self.position[int(i)] for i in allowed if int(i) in self.position), np.int64)
            sel = faiss.IDSelectorBatch(pos)
            wanted = min(k, len(pos))
        elif self.dead.any():
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.flatnonzero(self.dead).astype(np.int64)))
        else:
            sel = None
        # A narrow filter or many tombstones can end the graph walk short of k results:
        # widen the beam twice, then scan the stored vectors exactly under the same filter.
        ef = max(self.ef_search, k)
        for _ in range(3):
            scores, pos = self.index.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=ef, sel=sel))
            if bool(((pos >= 0).sum(axis=1) >= wanted).all()):
                break
            ef *= 4
        else:
            scores, pos = self.index.storage.search(queries, k, params=faiss.SearchParameters(sel=sel))
        ids = np.where(pos >= 0, self.labels[np.clip(pos, 0, None)] if len(self.labels) else -1, -1)
        return scores, ids

    def needs_rebuild(self) -> bool:
        return len(self.dead) > 0 and self.dead.sum() > 0.2 * len(self.dead)

    def to_bytes(self) -> bytes:
        return pack({"index": _serialize(self.index), "labels": self.labels, "dead": self.dead})

    @classmethod
    def from_bytes(cls, dim: int, payload: bytes, params: dict[str, Any]) -> FaissHNSW:
        arrays = unpack(payload)
        obj = cls(dim, **params)
        obj.index = _deserialize(arrays["index"])
        obj.labels, obj.dead = arrays["labels"].astype(np.int64), arrays["dead"].astype(bool)
        obj.position = {int(i): p for p, i in enumerate(obj.labels) if not obj.dead[p]}
        return obj
