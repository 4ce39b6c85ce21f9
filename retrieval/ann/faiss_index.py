"""FAISS backends. Exact inner product (flat) keyed by catalog ids via IndexIDMap2."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

__all__ = ["FaissFlat", "gpu_available"]


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class FaissFlat:
    """Exact search: the reference every approximate backend is measured against."""

    name = "flat"

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def params(self) -> dict[str, Any]:
        return {}

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32),
                                    np.ascontiguousarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, np.int64))

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, np.float32)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64)))
        scores, ids = self.index.search(q, k, params=params)
        return scores, ids

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, dim: int, payload: bytes, params: dict[str, Any]) -> FaissFlat:
        return cls(dim, faiss.deserialize_index(np.frombuffer(payload, np.uint8)))
