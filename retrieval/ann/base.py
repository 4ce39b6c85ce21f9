"""The small protocol every ANN backend implements, and how a bundle stores one.

An ANN index is a cache of the catalog's vectors: ids are catalog ids, and a saved index
records the catalog generation it reflects so that any process can bring it up to date.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["AnnIndex", "save_atomic", "read_bundle_file"]


@runtime_checkable
class AnnIndex(Protocol):
    """Inner-product search over unit vectors keyed by int64 ids."""

    name: str
    dim: int

    @property
    def ntotal(self) -> int:
        """How many vectors the index holds."""

    def params(self) -> dict[str, Any]:
        """Construction and search parameters (stored and shown by `retrieve info`)."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under ids; ids must not be present already."""

    def remove(self, ids: np.ndarray) -> None:
        """Forget ids; unknown ids are ignored."""

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (scores, ids), both (Q, k), best first, id -1 past the end.

        `allowed`, when given, restricts results to those ids.
        """

    def to_bytes(self) -> bytes:
        """Serialise the index (without the header the bundle adds)."""


def save_atomic(path: Path, header: dict[str, Any], payload: bytes) -> None:
    """Write header + payload to a temp file beside `path`, fsync, then rename over it.

    A reader opening `path` sees either the previous file or this one, never a mix,
    and a crash mid-write leaves the previous file in place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bundle_file(path: Path) -> tuple[dict[str, Any], bytes] | None:
    """Read what :func:`save_atomic` wrote; None when missing or unreadable."""
    try:
        raw = path.read_bytes()
        newline = raw.index(b"\n")
        return json.loads(raw[:newline]), raw[newline + 1:]
    except (OSError, ValueError):
        return None
