"""The small protocol every ANN backend implements, and how a bundle stores one.

An ANN index is a cache of the catalog's vectors: ids are catalog ids, and a saved index
records the catalog generation it reflects so that any process can bring it up to date.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..registry import Param

__all__ = ["AnnIndex", "SearchIndex", "pack", "unpack", "array_of", "pad_results", "search_reranked"]


@runtime_checkable
class SearchIndex(Protocol):
    """Inner-product search over unit vectors keyed by int64 catalog ids.

    Every backend supports add and remove, whatever its library allows: those that
    cannot delete keep tombstones, those that cannot insert keep an exact buffer, and
    :meth:`needs_rebuild` says when rebuilding from the catalog would pay off. What the
    searching code needs; a backend (:class:`AnnIndex`) also says how it is made.
    """

    dim: int
    exact: bool  # False: scores are approximate, the Engine re-ranks with stored vectors
    rerank: int  # how many times k candidates to fetch before an exact re-rank (1: none)

    @property
    def name(self) -> str:
        """The backend's registered name."""
        ...

    @property
    def ntotal(self) -> int:
        """How many live vectors the index holds."""
        ...

    def params(self) -> dict[str, Any]:
        """Resolved construction and search parameters (stored, shown by `retrieve info`)."""
        ...

    def build(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the content with these vectors, training the index where it trains."""
        ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under ids; ids must not be present already."""
        ...

    def remove(self, ids: np.ndarray) -> None:
        """Forget ids; unknown ids are ignored."""
        ...

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               effort: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> (scores, ids), both (Q, k), best first, id -1 past the end.

        `allowed`, when given, restricts results to those ids. One attempt, never a loop:
        an approximate index may return fewer than k (probed cells or a graph walk that
        hold too few live or allowed vectors). The caller decides whether to ask again at
        a higher `effort` (more cells, a wider beam, more tree nodes), up to
        :meth:`max_effort`, so that a search widens in one place (`query.nearest`).
        """
        ...

    def max_effort(self, k: int) -> int:
        """The effort at which a search for k results is exhaustive: a row shorter than k
        at this effort means that no more live, allowed vectors exist. 0 for exact indexes."""
        ...

    def needs_rebuild(self) -> bool:
        """True when tombstones, an overgrown buffer or stale training call for :meth:`build`."""
        ...

    def to_bytes(self) -> bytes:
        """Serialise the index (without the header the bundle adds)."""
        ...



@runtime_checkable
class AnnIndex(SearchIndex, Protocol):
    """A backend: a :class:`SearchIndex` registered by name with declared parameters."""

    PARAMS: ClassVar[Mapping[str, Param]]  # the constructor's keyword parameters, validated by the registry

    @classmethod
    def from_bytes(cls, dim: int, payload: bytes, params: dict[str, Any]) -> AnnIndex:
        """The index :meth:`to_bytes` saved, built with `params` (already validated).

        The payload is checked as far as a search would rely on it (types, dimension,
        lengths, ranges), so a damaged or crafted one raises ValueError here instead of
        failing, or crashing the process, at the first search.
        """
        ...


def search_reranked(index: SearchIndex, query: np.ndarray, k: int,
                    lookup: Callable[[list[int]], Mapping[int, np.ndarray]],
                    allowed: np.ndarray | None = None, effort: int = 0) -> list[tuple[int, float]]:
    """One query at one effort: fetch k x index.rerank candidates, re-score them exactly,
    best first.

    `lookup` returns the stored vectors of candidate ids (from the catalog, or memory);
    ids it does not know (removed meanwhile) are dropped. An exact index skips it.
    """
    q = np.asarray(query, np.float32).reshape(1, -1)
    scores, ids = index.search(q, k * index.rerank, allowed, effort)
    pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
    if index.exact or not pairs:
        return pairs
    vectors = lookup([i for i, _ in pairs])
    rescored = [(i, float(vectors[i] @ q[0])) for i, _ in pairs if i in vectors]
    return sorted(rescored, key=lambda p: -p[1])


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Several arrays in one payload (npz, no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def unpack(payload: bytes, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """The arrays :func:`pack` stored; ValueError when the payload is not such an archive
    or lacks one of the `required` arrays."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, zlib and numpy raise a dozen types on damaged bytes
        raise ValueError(f"not an array archive ({type(e).__name__}: {e})") from e
    missing = sorted(set(required) - set(arrays))
    if missing:
        raise ValueError(f"arrays missing: {', '.join(missing)}")
    return arrays


def array_of(arrays: Mapping[str, np.ndarray], key: str, kinds: str, length: int | None = None) -> np.ndarray:
    """`arrays[key]`, checked to be one-dimensional, of a numpy kind in `kinds` ("i"
    integers, "b" booleans, "u" unsigned, e.g. bytes) and, if given, of `length`."""
    a = arrays[key]
    if a.ndim != 1 or a.dtype.kind not in kinds:
        raise ValueError(f"array {key!r} is {a.dtype}{list(a.shape)}, expected one-dimensional of kind {kinds!r}")
    if length is not None and len(a) != length:
        raise ValueError(f"array {key!r} holds {len(a)} values, expected {length}")
    return a


def pad_results(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query ragged results -> (Q, k) arrays padded with -inf / -1, best first."""
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for row, (s, i) in enumerate(zip(scores, ids)):
        order = np.argsort(-s, kind="stable")[:k]
        out_s[row, : len(order)] = s[order]
        out_i[row, : len(order)] = i[order]
    return out_s, out_i
