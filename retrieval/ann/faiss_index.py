"""FAISS backends: exact (flat) and inverted lists (IVF-Flat, IVF-PQ); HNSW, the graph
index, is in :mod:`.hnsw_index` and shares the conversions and (de)serialisation here.

All use inner product on unit vectors and are keyed by catalog ids. With faiss-gpu
installed and a GPU visible, IVF indexes are trained and filled on the GPU, and flat and
IVF searches run there (on a clone made after the last change); the CPU index stays the
one saved. HNSW (no GPU version in FAISS), IVF-PQ code sizes the GPU does not take, and
every machine without a GPU use the CPU, silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import faiss
import numpy as np

from ..errors import RetrievalError
from ..registry import Param
from .base import array_of, pack, unpack
from .gpu import GpuMirror, gpu_available

__all__ = ["AddParts", "FaissFlat", "FaissIVF", "FaissIVFPQ", "fill_part", "gpu_available"]

TRAIN_SAMPLE = 200_000  # k-means training points for IVF, unless 39 a cell needs more

AddParts = Callable[[bytes, np.ndarray, np.ndarray], Iterable[bytes]]
"""Fills an inverted index somewhere else than in this process: called with the trained,
empty index (serialised by FAISS) and the ids and vectors being built, it returns copies of
that index (serialised), filled with those vectors under those ids, that together hold each
id once. A Ray job fills one copy a Parquet shard in parallel tasks (:mod:`retrieval.cluster`);
the build merges them. Training stays in the build, so both ways train alike."""


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.float32)


def _i64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, np.int64)


def _serialize(index: faiss.Index) -> np.ndarray:
    return faiss.serialize_index(index)


def _list_ids(index: faiss.Index) -> np.ndarray:
    """The ids an inverted index holds, list by list (an id held twice appears twice)."""
    lists = index.invlists
    held = [faiss.rev_swig_ptr(lists.get_ids(c), lists.list_size(c)).copy()
            for c in range(index.nlist) if lists.list_size(c)]
    return np.concatenate(held) if held else np.empty(0, np.int64)


def _deserialize(blob: np.ndarray, kind: type, dim: int) -> faiss.Index:
    """A serialised FAISS index, checked to be a `kind` over `dim`-d vectors by inner product.

    FAISS validates its own structures as it reads (it rejects an HNSW neighbour out of
    range, for one) but happily returns another index type or dimension, which would
    fail an assertion at the first search: ValueError here instead.
    """
    try:
        index = faiss.deserialize_index(np.ascontiguousarray(blob, np.uint8))
    except (RuntimeError, MemoryError) as e:
        raise ValueError(f"unreadable FAISS index ({e})") from e
    if not isinstance(index, kind) or index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"found a {type(index).__name__} of dimension {index.d}, metric {index.metric_type}; "
                         f"expected a {kind.__name__} of dimension {dim} by inner product")
    return index


def fill_part(trained: bytes, ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """A copy of the trained, empty index an :data:`AddParts` is given, filled with `vectors`
    under `ids` (each assigned its cell and, in IVF-PQ, encoded), serialised again."""
    index = faiss.deserialize_index(np.frombuffer(trained, np.uint8))
    index.add_with_ids(_f32(vectors), _i64(ids))
    return _serialize(index).tobytes()


class FaissFlat:
    """Exact search: the reference every approximate backend is measured against."""

    name = "flat"
    exact = True
    rerank = 1
    PARAMS: ClassVar[Mapping[str, Param]] = {}

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._gpu = GpuMirror()

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

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               effort: int = 0) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, k)
        if allowed is not None:  # selectors are CPU-only in FAISS
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(_i64(allowed)))
            return self.index.search(_f32(queries), k, params=params)
        return self._gpu.get(self.index).search(_f32(queries), k)

    def max_effort(self, k: int) -> int:
        return 0

    def needs_rebuild(self) -> bool:
        return False

    def to_bytes(self) -> bytes:
        return _serialize(self.index).tobytes()

    @classmethod
    def from_bytes(cls, dim: int, payload: bytes, params: dict[str, Any]) -> FaissFlat:
        index = _deserialize(np.frombuffer(payload, np.uint8), faiss.IndexIDMap2, dim)
        ids = faiss.vector_to_array(index.id_map)
        if not isinstance(faiss.downcast_index(index.index), faiss.IndexFlat) or len(ids) != index.ntotal:
            raise ValueError("the exact index does not map each stored vector to one id")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("the exact index holds an id twice")
        return cls(dim, index)


class FaissIVF:
    """Inverted lists over k-means cells, with exact (flat) codes.

    Until enough vectors exist to train the quantiser (`train_min`), everything lives
    in an exact buffer, so a small or new collection is searched exactly. `nlist`
    defaults to ~4 sqrt(N) at (re)build time; the index asks to be rebuilt when the
    collection has grown 4x beyond what it was trained on.
    """

    name = "ivf"
    exact = False
    rerank = 2
    PARAMS: ClassVar[Mapping[str, Param]] = {
        # FAISS's GPU IVF stops at 65,536 cells, and the automatic nlist never goes past it
        "nlist": Param(int, low=1, high=65536, optional=True, help="k-means cells (default ~4 sqrt(N))"),
        "nprobe": Param(int, low=1, high=65536, optional=True, help="cells searched (default nlist / 8)"),
        "train_min": Param(int, low=1, help="vectors kept in an exact buffer until the quantiser trains"),
    }
    _faiss_type: ClassVar[type] = faiss.IndexIVFFlat

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int | None = None,
                 train_min: int = 10_000) -> None:
        self.dim = dim
        self.nlist, self.nprobe, self.train_min = nlist, nprobe, train_min
        self.index: faiss.Index | None = None
        self.trained_on = 0
        self.buffer = FaissFlat(dim)
        self._gpu = GpuMirror()

    @property
    def ntotal(self) -> int:
        return self.buffer.ntotal + (int(self.index.ntotal) if self.index is not None else 0)

    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "train_min": self.train_min}

    def _resolved(self, n: int) -> tuple[int, int]:
        nlist = self.nlist or int(min(65536, max(16, 4 * math.sqrt(n))))
        nlist = max(1, min(nlist, n // 39))  # FAISS wants >= 39 training points per cell
        nprobe = self.nprobe or max(8, min(256, nlist // 8))
        return nlist, nprobe

    def _empty(self, nlist: int) -> faiss.Index:
        """An untrained FAISS index of this kind with `nlist` cells."""
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)

    def build(self, ids: np.ndarray, vectors: np.ndarray, add_parts: AddParts | None = None) -> None:
        """Train on a sample of `vectors` and add them all under `ids`; with `add_parts`,
        the trained index is filled by its parts (see :data:`AddParts`) instead of here.

        Raises:
            RetrievalError: the parts do not hold each of `ids` exactly once.
        """
        self.buffer = FaissFlat(self.dim)
        self.index, self._gpu = None, GpuMirror()
        if len(ids) < self._trainable_from():
            self.buffer.add(ids, vectors)
            return
        nlist, _ = self._resolved(len(ids))
        # k-means wants 39 to 256 points a cell; beyond ~200k points more barely moves the
        # centroids but costs minutes (a 1M collection would train on all of it).
        wanted = min(len(ids), max(nlist * 39, min(nlist * 256, TRAIN_SAMPLE)))
        sample = _f32(vectors[np.sort(np.random.default_rng(0).choice(len(ids), wanted, replace=False))])
        if add_parts is None:
            self.index = self._gpu.build(self._empty(nlist), sample, _f32(vectors), _i64(ids))
        else:  # trained here (on the GPU where there is one), filled with nothing yet
            trained = self._gpu.build(self._empty(nlist), sample, _f32(vectors[:0]), _i64(ids[:0]))
            self.index = self._merged(trained, add_parts(_serialize(trained).tobytes(), ids, vectors), ids)
            self._gpu.invalidate()
        self.trained_on = len(ids)

    def _merged(self, trained: faiss.Index, parts: Iterable[bytes], ids: np.ndarray) -> faiss.Index:
        """`parts` moved into `trained` (FAISS refuses a part of another kind or size), checked
        to hold exactly `ids`, each once: a part lost or added twice would otherwise make
        images silently unfindable, or found twice."""
        for blob in parts:
            trained.merge_from(_deserialize(np.frombuffer(blob, np.uint8), self._faiss_type, self.dim), 0)
        held = _list_ids(trained)
        if len(held) != len(ids) or not np.array_equal(np.sort(held), np.sort(_i64(ids))):
            unique = len(np.unique(held))
            raise RetrievalError(f"the filled parts of the {self.name} index hold {len(held)} entries "
                                 f"({unique} distinct ids); expected the {len(ids)} ids being built, each once")
        return trained

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

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               effort: int = 0) -> tuple[np.ndarray, np.ndarray]:
        # Probed cells can hold fewer than k live (or allowed) vectors, after many deletes
        # or under a narrow filter: each effort level probes twice as many cells, and the
        # last probes them all, which is exact.
        if self.index is None:
            return self.buffer.search(queries, k, allowed)
        nprobe = min(self._nprobe() << min(max(effort, 0), self.max_effort(k)), self.index.nlist)
        return self._search_cells(queries, max(1, k), nprobe, allowed)

    def max_effort(self, k: int) -> int:
        if self.index is None:
            return 0
        return max(0, math.ceil(math.log2(self.index.nlist / self._nprobe())))

    def _nprobe(self) -> int:
        """Cells probed at effort 0."""
        assert self.index is not None
        return min(self._resolved(self.trained_on)[1], self.index.nlist)

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
        """Vectors needed before training."""
        return self.train_min

    def to_bytes(self) -> bytes:
        arrays = {"buffer": np.frombuffer(self.buffer.to_bytes(), np.uint8),
                  "trained_on": np.array(self.trained_on)}
        if self.index is not None:
            arrays["index"] = _serialize(self.index)
        return pack(arrays)

    @classmethod
    def from_bytes(cls, dim: int, payload: bytes, params: dict[str, Any]) -> FaissIVF:
        obj = cls(dim, **params)
        arrays = unpack(payload, ("buffer", "trained_on"))
        obj.buffer = FaissFlat.from_bytes(dim, array_of(arrays, "buffer", "u").tobytes(), {})
        trained_on = arrays["trained_on"]
        if trained_on.shape != () or trained_on.dtype.kind != "i" or trained_on < 0:
            raise ValueError(f"trained_on is {trained_on!r}, expected a count")
        obj.trained_on = int(trained_on)
        if "index" in arrays:
            index = _deserialize(array_of(arrays, "index", "u"), cls._faiss_type, dim)
            if not index.is_trained:
                raise ValueError("the inverted index was saved untrained")
            obj.index = index
        return obj


class FaissIVFPQ(FaissIVF):
    """IVF with product-quantised codes: ~dim/8 bytes a vector, for collections that do
    not fit in memory as float32.

    `pq_m` one-byte sub-quantisers, ~8 dimensions each by default: 16 dimensions a byte
    halves the codes but, on real 1,280-d embeddings at 100k, puts only 93% of the true
    top 10 among 8 x 10 candidates (98% among 16 x 10); 8 dimensions a byte puts 99.8%
    there (scripts/bench_ann.py measures it at 1M). PQ distances are coarse, so the
    Engine re-ranks 16 x k candidates with the stored vectors.
    """

    name = "ivfpq"
    rerank = 16
    PARAMS: ClassVar[Mapping[str, Param]] = {
        **FaissIVF.PARAMS,
        "pq_m": Param(int, low=1, optional=True, help="one-byte sub-quantisers; must divide the dimension"),
    }
    _faiss_type: ClassVar[type] = faiss.IndexIVFPQ

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int | None = None,
                 pq_m: int | None = None, train_min: int = 10_000) -> None:
        divisors = [m for m in range(1, dim + 1) if dim % m == 0]
        if pq_m is None:
            pq_m = max(m for m in divisors if m <= max(1, dim // 8))
        elif pq_m not in divisors:  # FAISS would fail every search and write after training
            raise RetrievalError(f"{self.name} parameter pq_m={pq_m} must divide the dimension {dim}: choose "
                                 + ", ".join(map(str, divisors)))
        super().__init__(dim, nlist, nprobe, train_min)
        self.pq_m = pq_m

    def params(self) -> dict[str, Any]:
        return {**super().params(), "pq_m": self.pq_m}

    def _empty(self, nlist: int) -> faiss.Index:
        return faiss.IndexIVFPQ(faiss.IndexFlatIP(self.dim), self.dim, nlist, self.pq_m, 8,
                                faiss.METRIC_INNER_PRODUCT)

    def _trainable_from(self) -> int:
        """Never fewer than the 256 points that PQ codebooks (8 bits a code) need, so a
        small train_min cannot make writes fail."""
        return max(self.train_min, 256)
