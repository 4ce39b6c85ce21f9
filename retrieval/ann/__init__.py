"""Approximate (and exact) nearest-neighbour backends behind one protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import UnknownNameError
from .base import AnnIndex, read_bundle_file, save_atomic
from .faiss_index import FaissFlat

__all__ = ["AnnIndex", "BACKENDS", "create_index", "load_index", "save_atomic", "read_bundle_file"]

# name -> (constructor(dim, **params), loader(dim, payload, params))
BACKENDS: dict[str, tuple[Callable[..., AnnIndex], Callable[[int, bytes, dict[str, Any]], AnnIndex]]] = {
    "flat": (FaissFlat, FaissFlat.from_bytes),
}


def create_index(name: str, dim: int, **params: Any) -> AnnIndex:
    """A new, empty index of the named backend."""
    if name not in BACKENDS:
        raise UnknownNameError(f"unknown index type {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name][0](dim, **params)


def load_index(name: str, dim: int, payload: bytes, params: dict[str, Any]) -> AnnIndex:
    """Rebuild a saved index from its payload."""
    if name not in BACKENDS:
        raise UnknownNameError(f"unknown index type {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name][1](dim, payload, params)
