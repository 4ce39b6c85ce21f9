"""The small protocol every ANN backend implements, and how a bundle stores one.

An ANN index is a cache of the catalog's vectors: ids are catalog ids, and a saved index
records the catalog generation it reflects so that any process can bring it up to date.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tempfile
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["AnnIndex", "save_atomic", "read_bundle_file", "pack", "unpack", "pad_results", "search_reranked"]


@runtime_checkable
class AnnIndex(Protocol):
    """Inner-product search over unit vectors keyed by int64 catalog ids.

    Every backend supports add and remove, whatever its library allows: those that
    cannot delete keep tombstones, those that cannot insert keep an exact buffer, and
    :meth:`needs_rebuild` says when rebuilding from the catalog would pay off.
    """

    name: str
    dim: int
    exact: bool  # False: scores are approximate, the Engine re-ranks with stored vectors
    rerank: int  # how many times k candidates to fetch before an exact re-rank (1: none)

    @property
    def ntotal(self) -> int:
        """How many live vectors the index holds."""

    def params(self) -> dict[str, Any]:
        """Resolved construction and search parameters (stored, shown by `retrieve info`)."""

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the content with these vectors, training the index where it trains."""

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under ids; ids must not be present already."""

    def remove(self, ids: np.ndarray) -> None:
        """Forget ids; unknown ids are ignored."""

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (scores, ids), both (Q, k), best first, id -1 past the end.

        `allowed`, when given, restricts results to those ids.
        """

    def needs_rebuild(self) -> bool:
        """True when tombstones, an overgrown buffer or stale training call for :meth:`build`."""

    def to_bytes(self) -> bytes:
        """Serialise the index (without the header the bundle adds)."""


def search_reranked(index: AnnIndex, query: np.ndarray, k: int,
                    lookup: Callable[[list[int]], Mapping[int, np.ndarray]],
                    allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """One query: fetch k x index.rerank candidates, re-score them exactly, best first.

    `lookup` returns the stored vectors of candidate ids (from the catalog, or memory);
    ids it does not know (removed meanwhile) are dropped. An exact index skips it.
    """
    q = np.asarray(query, np.float32).reshape(1, -1)
    scores, ids = index.search(q, k * index.rerank, allowed)
    pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
    if index.exact or not pairs:
        return pairs
    vectors = lookup([i for i, _ in pairs])
    rescored = [(i, float(vectors[i] @ q[0])) for i, _ in pairs if i in vectors]
    return sorted(rescored, key=lambda p: -p[1])


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Several arrays in one payload (npz, no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def pad_results(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query ragged results -> (Q, k) arrays padded with -inf / -1, best first."""
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for row, (s, i) in enumerate(zip(scores, ids)):
        order = np.argsort(-s, kind="stable")[:k]
        out_s[row, : len(order)] = s[order]
        out_i[row, : len(order)] = i[order]
    return out_s, out_i


def save_atomic(path: Path, header: dict[str, Any], payload: bytes) -> None:
    """Write header + payload to a temp file beside `path`, fsync, then rename over it.

    A reader opening `path` sees either the previous file or this one, never a mix,
    and a crash mid-write leaves the previous file in place. The caller holds the
    bundle's write lock, so a temp file already there is a crashed save's: removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        stale.unlink(missing_ok=True)
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
