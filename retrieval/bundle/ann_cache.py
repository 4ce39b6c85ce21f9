"""The ANN index as a cache of the catalog's vectors (see :mod:`.cache` for how it is kept).

An index may compare vectors whitened (``retrieve reindex --whiten``): the whitening is
learned from the catalog's vectors and stored in the catalog (setting ``whitening``), its
digest in the index settings, so an index file made under another whitening, or none, is
rebuilt; the catalog keeps the extractor's own vectors either way.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ann import AUTO, check_settings, create_index, load_index, resolve_auto
from ..ann.base import SearchIndex
from ..ann.mapped import MappedIndex
from ..catalog import STATUS_OK, Catalog, Changes
from ..errors import RetrievalError
from ..extractors.whitening import Whitening
from .cache import CatalogCache
from .files import read_bundle_header

if TYPE_CHECKING:
    from ..ann.faiss_index import AddParts

__all__ = ["AnnCache", "WHITENING_SETTING", "stored_whitening", "whitening_record"]

WHITENING_SETTING = "whitening"  # catalog setting: whitening_record(), absent when the index is not whitened


def whitening_record(whitening: Whitening, learned_from: int) -> dict[str, Any]:
    """What the catalog stores of a whitening: a summary (digest, dimensions, how many
    images it was learned from, shrinkage) and the arrays themselves (base64 .npz)."""
    data = whitening.to_bytes()
    return {"digest": hashlib.sha256(data).hexdigest()[:16], "in_dim": whitening.in_dim, "dim": whitening.dim,
            "learned_from": learned_from, "shrinkage": round(whitening.shrinkage, 6),
            "data": base64.b64encode(data).decode("ascii")}


def stored_whitening(record: Mapping[str, Any], in_dim: int) -> Whitening:
    """The whitening a :func:`whitening_record` holds, checked.

    Raises:
        RetrievalError: the record is damaged (relearn it with ``retrieve reindex --whiten``).
    """
    try:
        data = base64.b64decode(str(record["data"]), validate=True)
    except (KeyError, TypeError, ValueError):
        raise RetrievalError("the stored whitening is damaged; relearn it (retrieve reindex --whiten)") from None
    if hashlib.sha256(data).hexdigest()[:16] != record.get("digest"):
        raise RetrievalError("the stored whitening does not match its digest; relearn it (retrieve reindex --whiten)")
    return Whitening.from_bytes(data, in_dim)


class AnnCache(CatalogCache[SearchIndex]):
    """Keeps one in-memory ANN index in step with a catalog.

    Args:
        backend: a backend name, or "auto" (re-decided from the collection size at
            every rebuild; a changed decision triggers one).
        params: backend parameters, as stored in the catalog (none for "auto").
    """

    what = "ANN index"

    def __init__(self, file: Path, catalog: Catalog, dim: int, digest: str,
                 backend: str, params: Mapping[str, Any], whitened: str | None = None) -> None:
        super().__init__(file, catalog, digest)
        self.dim, self.backend, self.params, self.whitened = dim, backend, dict(params), whitened
        self._whitening: tuple[str, Whitening] | None = None  # (digest, whitening) once read

    def settings(self) -> dict[str, Any]:
        """The index settings as the catalog stores them (also recorded in the file):
        backend, parameters and, in a whitened index, the whitening's digest."""
        settings = {"backend": self.backend, "params": self.params}
        return {**settings, "whitening": self.whitened} if self.whitened else settings

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

    def switch(self, backend: str | None, params: Mapping[str, Any], commit: Callable[[dict[str, Any]], None],
               whitening: Whitening | None = None, whitening_digest: str | None = None) -> dict[str, Any]:
        """Rebuild under new settings, which take effect only once their index is saved.

        `backend` None keeps the current one, and so do the parameters when none are
        given; `whitening` (with its record's digest) is what the new index compares
        vectors by, None for the vectors as they are. The settings are validated
        (RetrievalError before any work), the index is built in memory and saved, and
        only then is `commit(settings)` called to store them in the catalog. A failure
        before that leaves the settings, the file and this cache as they were; should
        `commit` itself fail, the saved file no longer matches the stored settings and is
        rebuilt under them on its next load. The caller holds the write lock. Returns
        :meth:`describe`.
        """
        backend = backend or self.backend
        if not params and backend == self.backend:
            params = self.params
        settings: dict[str, Any] = {"backend": backend, "params": check_settings(backend, params, self.dim)}
        if whitening is not None:
            settings["whitening"] = whitening_digest
        index, generation = self._build_with(settings, whitening)
        self._write(index, generation, settings)
        commit(settings)
        self.backend, self.params, self.whitened = backend, settings["params"], whitening_digest
        self._whitening = (whitening_digest, whitening) if whitening is not None and whitening_digest else None
        self._index, self.generation, self.rebuilt_unsaved = index, generation, False
        return self.describe()

    @property
    def whitening(self) -> Whitening | None:
        """The whitening the index compares vectors by (read from the catalog on first use).

        Raises:
            RetrievalError: the stored whitening is missing, damaged or not the one the
                index settings name (relearn it with ``retrieve reindex --whiten``).
        """
        if not self.whitened:
            return None
        if self._whitening is None or self._whitening[0] != self.whitened:
            record = self.catalog.get_json(WHITENING_SETTING)
            if not isinstance(record, dict) or record.get("digest") != self.whitened:
                raise RetrievalError(f"the index at {self.file.parent} names a whitening the catalog does not hold; "
                                     "relearn it (retrieve reindex --whiten) or drop it (retrieve reindex --no-whiten)")
            self._whitening = (self.whitened, stored_whitening(record, self.dim))
        return self._whitening[1]

    def describe(self) -> dict[str, Any]:
        """What `retrieve info` shows: requested and effective backend, parameters, size.

        An index in memory is caught up and described. Otherwise nothing is loaded (nor
        FAISS imported): the saved file's header, if made for these settings, says which
        backend and parameters the next search will load, else the settings say what it
        will build; the size is the catalog's count, which either reaches once caught up.
        """
        whitening = self._whitening_summary()
        if self._index is not None:
            index = self.sync()
            return {"type": self.backend, "effective": index.name, "params": index.params(), "count": index.ntotal,
                    **whitening}
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
        return {"type": self.backend, "effective": effective, "params": dict(params), "count": count, **whitening}

    def _whitening_summary(self) -> dict[str, Any]:
        """``{"whitening": {digest, dims, learned_from, shrinkage}}`` for a whitened index
        (the arrays are not decoded), else nothing."""
        if not self.whitened:
            return {}
        record = self.catalog.get_json(WHITENING_SETTING)
        summary = {k: v for k, v in record.items() if k != "data"} if isinstance(record, dict) else {}
        return {"whitening": summary or {"digest": self.whitened, "missing": True}}

    def _backend_for(self, settings: Mapping[str, Any], count: int) -> tuple[str, dict[str, Any]]:
        if settings["backend"] == AUTO:
            return resolve_auto(count, self.dim), {}
        return settings["backend"], settings["params"]

    def _due(self, index: SearchIndex) -> bool:
        """Also when "auto" would now pick another backend for the collection's size."""
        return index.needs_rebuild() or self._backend_for(self.settings(), index.ntotal)[0] != index.name

    def _build(self, settings: Mapping[str, Any]) -> tuple[SearchIndex, int]:
        return self._build_with(settings, self.whitening)

    def rebuild_if_due(self, add_parts: AddParts) -> bool:
        """Rebuild now if the index is due for it, as :meth:`persist` would, and say whether
        it was. An inverted-list index (IVF, IVF-PQ) comparing vectors as stored is filled
        by `add_parts` (a Ray job's parallel tasks); any other (flat, HNSW, Annoy, a
        whitened one) is built here from the stored vectors, once. Either way the new
        index reflects the generation read before its vectors, so catching up adds nothing
        twice, and the next :meth:`persist` saves it."""
        if not self._due(self.sync()):
            return False
        self._index, self.generation = self._build_with(self.settings(), self.whitening, add_parts)
        self.rebuilt_unsaved = True
        return True

    def _build_with(self, settings: Mapping[str, Any], whitening: Whitening | None,
                    add_parts: AddParts | None = None) -> tuple[SearchIndex, int]:
        from ..ann.faiss_index import FaissIVF

        generation = self.catalog.generation()
        blocks = list(self.catalog.iter_vectors())
        ids = np.concatenate([b[0] for b in blocks]) if blocks else np.empty(0, np.int64)
        vectors = np.concatenate([b[1] for b in blocks]) if blocks else np.empty((0, self.dim), np.float32)
        name, params = self._backend_for(settings, len(ids))
        inner = create_index(name, whitening.dim if whitening else self.dim, **params)
        if add_parts is not None and whitening is None and isinstance(inner, FaissIVF):
            inner.build(ids, vectors, add_parts)
            return inner, generation
        index = self._mapped(inner, whitening)
        index.build(ids, vectors)
        return index, generation

    def _mapped(self, index: SearchIndex, whitening: Whitening | None) -> SearchIndex:
        """`index` as searched with original vectors: itself, or wrapped to whiten them."""
        if whitening is None:
            return index
        return MappedIndex(index, whitening.apply, self.dim, self.catalog.vectors)

    def _add(self, index: SearchIndex, changes: Changes) -> None:
        assert changes.vectors is not None
        index.add(changes.ids, changes.vectors)

    def _from_payload(self, header: Mapping[str, Any], payload: bytes) -> SearchIndex:
        whitening = self.whitening
        inner = load_index(header["backend"], whitening.dim if whitening else self.dim, payload, header["params"])
        return self._mapped(inner, whitening)

    def _identity(self) -> dict[str, Any]:
        return {**super()._identity(), "dim": self.dim}

    def _describe_index(self, index: SearchIndex) -> dict[str, Any]:
        return {"backend": index.name, "params": index.params()}
