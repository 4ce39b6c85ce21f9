"""The ANN index as a cache of the catalog's vectors (see :mod:`.cache` for how it is kept)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..ann import AUTO, AnnIndex, check_settings, create_index, load_index, resolve_auto
from ..catalog import STATUS_OK, Catalog, Changes
from ..errors import RetrievalError
from .cache import CatalogCache
from .files import read_bundle_header

__all__ = ["AnnCache"]


class AnnCache(CatalogCache[AnnIndex]):
    """Keeps one in-memory ANN index in step with a catalog.

    Args:
        backend: a backend name, or "auto" (re-decided from the collection size at
            every rebuild; a changed decision triggers one).
        params: backend parameters, as stored in the catalog (none for "auto").
    """

    what = "ANN index"

    def __init__(self, file: Path, catalog: Catalog, dim: int, digest: str,
                 backend: str, params: Mapping[str, Any]) -> None:
        super().__init__(file, catalog, digest)
        self.dim, self.backend, self.params = dim, backend, dict(params)

    def settings(self) -> dict[str, Any]:
        """The index settings as the catalog stores them (also recorded in the file)."""
        return {"backend": self.backend, "params": self.params}

    def require(self, backend: str | None, params: Mapping[str, Any] | None) -> None:
        """Raise unless the index already uses this backend and these parameters (however
        spelled): an existing bundle is switched with :meth:`switch`, never by reopening it."""
        want_backend = backend or self.backend
        same_backend = want_backend == self.backend
        want_params = check_settings(want_backend, params or (self.params if same_backend else {}))
        if (want_backend, want_params) != (self.backend, check_settings(self.backend, self.params)):
            raise RetrievalError(f"the index at {self.file.parent} uses the {self.backend} backend "
                                 f"{dict(self.params) or ''}; switch with `retrieve reindex --backend "
                                 f"{want_backend}` (Engine.reindex), or drop the backend options")

    def switch(self, backend: str | None, params: Mapping[str, Any],
               commit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Rebuild under new settings, which take effect only once their index is saved.

        `backend` None keeps the current one, and so do the parameters when none are
        given. The settings are validated (RetrievalError before any work), the index is
        built in memory and saved, and only then is `commit(settings)` called to store
        them in the catalog. A failure before that leaves the settings, the file and
        this cache as they were; should `commit` itself fail, the saved file no longer
        matches the stored settings and is rebuilt under them on its next load. The
        caller holds the write lock. Returns :meth:`describe`.
        """
        backend = backend or self.backend
        if not params and backend == self.backend:
            params = self.params
        settings = {"backend": backend, "params": check_settings(backend, params, self.dim)}
        index, generation = self._build(settings)
        self._write(index, generation, settings)
        commit(settings)
        self.backend, self.params = backend, settings["params"]
        self._index, self.generation, self.rebuilt_unsaved = index, generation, False
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """What `retrieve info` shows: requested and effective backend, parameters, size.

        An index in memory is caught up and described. Otherwise nothing is loaded (nor
        FAISS imported): the saved file's header, if made for these settings, says which
        backend and parameters the next search will load, else the settings say what it
        will build; the size is the catalog's count, which either reaches once caught up.
        """
        if self._index is not None:
            index = self.sync()
            return {"type": self.backend, "effective": index.name, "params": index.params(), "count": index.ntotal}
        count = self.catalog.counts()[STATUS_OK]
        try:
            header = read_bundle_header(self.file)
        except (OSError, ValueError):  # damaged: the next search rebuilds it under the settings
            header = None
        if header is not None and self._fits(header) and isinstance(header.get("backend"), str) \
                and isinstance(header.get("params"), dict):
            effective, params = header["backend"], header["params"]
        else:
            effective, params = self._backend_for(self.settings(), count)
        return {"type": self.backend, "effective": effective, "params": dict(params), "count": count}

    def _backend_for(self, settings: Mapping[str, Any], count: int) -> tuple[str, dict[str, Any]]:
        if settings["backend"] == AUTO:
            return resolve_auto(count, self.dim), {}
        return settings["backend"], settings["params"]

    def _due(self, index: AnnIndex) -> bool:
        """Also when "auto" would now pick another backend for the collection's size."""
        return index.needs_rebuild() or self._backend_for(self.settings(), index.ntotal)[0] != index.name

    def _build(self, settings: Mapping[str, Any]) -> tuple[AnnIndex, int]:
        generation = self.catalog.generation()
        blocks = list(self.catalog.iter_vectors())
        ids = np.concatenate([b[0] for b in blocks]) if blocks else np.empty(0, np.int64)
        vectors = np.concatenate([b[1] for b in blocks]) if blocks else np.empty((0, self.dim), np.float32)
        name, params = self._backend_for(settings, len(ids))
        index = create_index(name, self.dim, **params)
        index.build(ids, vectors)
        return index, generation

    def _add(self, index: AnnIndex, changes: Changes) -> None:
        assert changes.vectors is not None
        index.add(changes.ids, changes.vectors)

    def _from_payload(self, header: Mapping[str, Any], payload: bytes) -> AnnIndex:
        return load_index(header["backend"], self.dim, payload, header["params"])

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "dim": self.dim}

    def _describe_index(self, index: AnnIndex) -> dict[str, Any]:
        return {"backend": index.name, "params": index.params()}
