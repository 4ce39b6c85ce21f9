"""Approximate (and exact) nearest-neighbour backends behind one protocol.

Every backend is registered in :data:`BACKENDS` with the parameters its constructor
declares (type, range), so a typo or an out-of-range value is one clear error before
anything is built or saved, never a FAISS abort, a huge allocation or an index that
silently finds nothing. Checks that need the vector dimension (IVF-PQ's `pq_m` must
divide it) run in :func:`check_settings` once the dimension is known.

The backend modules import FAISS and Annoy (a second or more on a CPU box): they, and so
:data:`BACKENDS` and :func:`gpu_available`, load on first use (PEP 562), so that opening a
bundle to read its catalog (``retrieve info``, ``retrieve tag``) imports neither.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import RetrievalError
from ..registry import Registry, declared, unknown_name
from .base import AnnIndex, SearchIndex, search_reranked

if TYPE_CHECKING:
    from .gpu import gpu_available

    BACKENDS: Registry[AnnIndex]

__all__ = ["AnnIndex", "AUTO", "SearchIndex", "BACKENDS", "check_settings", "create_index", "load_index", "resolve_auto",
           "gpu_available", "search_reranked"]


@functools.cache
def _backends() -> Registry[AnnIndex]:
    """:data:`BACKENDS`, built (and FAISS and Annoy imported) on first use."""
    from .annoy_index import AnnoyBackend
    from .faiss_index import FaissFlat, FaissIVF, FaissIVFPQ
    from .hnsw_index import FaissHNSW

    backends: Registry[AnnIndex] = Registry("ANN index")
    for backend in (FaissFlat, FaissIVF, FaissIVFPQ, FaissHNSW, AnnoyBackend):
        backends.add(backend.name, backend, params=declared(backend, backend.PARAMS),
                     help=(backend.__doc__ or "").strip().splitlines()[0])
    return backends


def __getattr__(name: str) -> Any:
    if name == "BACKENDS":
        return _backends()
    if name == "gpu_available":
        from .gpu import gpu_available
        return gpu_available
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


AUTO = "auto"  # not a backend: a setting that picks one by collection size at every rebuild

# Below this many vectors exact search is fast enough and needs no tuning.
AUTO_EXACT_BELOW = 50_000


def resolve_auto(count: int, dim: int, available_bytes: int | None = None) -> str:
    """Pick a backend for `count` vectors: exact while small, HNSW while it fits in
    half the free memory (vectors plus graph), else IVF-PQ (~dim/8 bytes a vector)."""
    if count < AUTO_EXACT_BELOW:
        return "flat"
    if available_bytes is None:
        available_bytes = _available_memory()
    hnsw_bytes = count * (dim * 4 + 32 * 2 * 8)
    return "hnsw" if hnsw_bytes <= available_bytes // 2 else "ivfpq"


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def check_settings(name: str, params: Mapping[str, Any], dim: int | None = None) -> dict[str, Any]:
    """Validated, typed and complete (defaults filled in) parameters for the index
    setting `name` ("auto" or a backend): what the engine stores, and what two spellings
    of the same settings compare equal by. With `dim`, checks that depend on the
    dimension run too.

    Raises:
        UnknownNameError: `name` is neither a backend nor "auto" (the message lists them).
        RetrievalError: an unknown parameter (the message lists the backend's), a value
            of the wrong type or out of range, or one the dimension rules out.
    """
    if name == AUTO:
        if params:
            raise RetrievalError("the auto index takes no parameters; name a backend to set them")
        return {}
    backends = _backends()
    if name not in backends:
        raise unknown_name(backends.kind, name, [*backends, AUTO])
    # None asks for the default decided at build time, as leaving the parameter out does
    checked = {k: v for k, v in backends.resolve(name, params).items() if v is not None}
    if dim is not None:
        backends.create(name, checked, dim)  # an empty index: constructors check what needs dim
    return checked


def create_index(name: str, dim: int, **params: Any) -> AnnIndex:
    """A new, empty index of the named backend (parameters validated)."""
    return _backends().create(name, params, dim)


def load_index(name: str, dim: int, payload: bytes, params: Mapping[str, Any]) -> AnnIndex:
    """Rebuild a saved index from its payload.

    Raises:
        RetrievalError: unknown backend or parameters (a file from elsewhere).
        ValueError: the payload is damaged or inconsistent (see ``AnnIndex.from_bytes``).
    """
    backends = _backends()
    backend: type[AnnIndex] = backends.entry(name).factory  # type: ignore[assignment]  # entries are classes
    return backend.from_bytes(dim, payload, backends.check(name, params))
