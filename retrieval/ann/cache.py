"""The ANN index as a cache of the catalog: load, catch up, compact, save.

The saved file records the catalog generation it reflects. Catching up replays only
what changed after it (rows with a newer generation, tombstones), so a reader process
sees a writer's committed work on its next search, and a missing, foreign or corrupt
file is rebuilt from the stored vectors without reading any image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..catalog import Catalog
from . import create_index, load_index, resolve_auto
from .base import AnnIndex, read_bundle_file, save_atomic

__all__ = ["AnnCache"]

log = logging.getLogger(__name__)


class AnnCache:
    """Keeps one in-memory ANN index in step with a catalog.

    Args:
        backend: a backend name, or "auto" (re-decided from the collection size at
            every rebuild; a changed decision triggers one).
        params: backend parameters (ignored for "auto", which uses each default).
    """

    def __init__(self, file: Path, catalog: Catalog, dim: int, digest: str,
                 backend: str, params: dict[str, Any]) -> None:
        self.file, self.catalog, self.dim, self.digest = file, catalog, dim, digest
        self.backend, self.params = backend, dict(params)
        self._index: AnnIndex | None = None
        self.generation = -1
        self.rebuilt_unsaved = False

    def _effective(self, count: int) -> tuple[str, dict[str, Any]]:
        if self.backend == "auto":
            return resolve_auto(count, self.dim), {}
        return self.backend, self.params

    def sync(self) -> AnnIndex:
        """The index, loaded or built if needed and caught up with the catalog."""
        if self._index is None and not self._load():
            self.rebuild()
        assert self._index is not None
        changes = self.catalog.changes_since(self.generation)
        if changes.generation < self.generation:  # the catalog was replaced by an older copy
            self.rebuild()
        elif changes.generation != self.generation:
            self._index.remove(np.concatenate([changes.removed, changes.ids]))
            if changes.vectors is not None:
                self._index.add(changes.ids, changes.vectors)
            self.generation = changes.generation
        return self._index

    def _load(self) -> bool:
        saved = read_bundle_file(self.file)
        if saved is None:
            return False
        header, payload = saved
        wanted = self.backend == "auto" or header.get("backend") == self.backend
        if not (wanted and header.get("dim") == self.dim and header.get("manifest") == self.digest):
            return False
        try:
            self._index = load_index(header["backend"], self.dim, payload, header.get("params", {}))
            self.generation = int(header["generation"])
            return True
        except (RuntimeError, KeyError, ValueError, OSError) as e:
            log.warning("index file %s unreadable (%s); rebuilding from the catalog", self.file, e)
            return False

    def rebuild(self) -> None:
        """Build a fresh index from every stored vector, in one bulk step.

        The generation is read before the vectors: anything committed meanwhile is
        replayed again by the next :meth:`sync`, which is harmless (remove, then add).
        """
        generation = self.catalog.generation()
        blocks = list(self.catalog.iter_vectors())
        ids = np.concatenate([b[0] for b in blocks]) if blocks else np.empty(0, np.int64)
        vectors = np.concatenate([b[1] for b in blocks]) if blocks else np.empty((0, self.dim), np.float32)
        name, params = self._effective(len(ids))
        index = create_index(name, self.dim, **params)
        index.build(ids, vectors)
        self._index, self.generation = index, generation
        self.rebuilt_unsaved = True

    def compact_if_due(self) -> bool:
        """Rebuild when the backend asks (tombstones, buffer, training) or auto would now pick another."""
        index = self.sync()
        due = index.needs_rebuild() or self._effective(index.ntotal)[0] != index.name
        if due:
            self.rebuild()
            self.sync()
        return due

    def save(self) -> None:
        """Write the index atomically; the caller holds the bundle's write lock."""
        index = self.sync()
        header = {"backend": index.name, "dim": self.dim, "generation": self.generation,
                  "params": index.params(), "manifest": self.digest, "count": index.ntotal}
        save_atomic(self.file, header, index.to_bytes())
        self.rebuilt_unsaved = False

    def describe(self) -> dict[str, Any]:
        """What `retrieve info` shows: requested and effective backend, parameters, size."""
        index = self.sync()
        return {"type": self.backend, "effective": index.name, "params": index.params(),
                "count": index.ntotal}
