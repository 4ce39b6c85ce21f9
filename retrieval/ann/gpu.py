"""FAISS on a GPU, when this FAISS build has GPU support and sees a GPU; silently not otherwise.

The CPU index is always the one kept and saved; a GPU clone serves searches (and IVF
training and filling) and is dropped whenever the CPU index changes.
"""

from __future__ import annotations

import logging
from typing import Any

import faiss
import numpy as np

__all__ = ["GpuMirror", "gpu_available"]

log = logging.getLogger(__name__)


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class GpuMirror:
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
