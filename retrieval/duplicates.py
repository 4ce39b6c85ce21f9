"""Exact and near-duplicate images, found without an N x N similarity matrix.

Near duplicates: each block of stored vectors asks the ANN index for its few nearest
neighbours, pairs above the threshold are merged with union-find. Memory is one parent
entry per image plus one block of results, so a million images fit in a few hundred MB.
A perceptual hash can confirm each group (:func:`confirm_by_phash`); :func:`copies_of`
and :func:`keeper` say what each copy is and which one a rule keeps (:mod:`.culling`
moves or trashes the others).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

import numpy as np

from .ann.base import SearchIndex
from .catalog import Catalog, ImageRow
from .errors import RetrievalError, UnknownNameError

__all__ = ["DuplicateGroup", "exact_groups", "near_groups", "fold", "confirm_by_phash", "require_imagehash", "Copy",
           "KEEP_RULES", "copies_of", "keeper"]

# A half-size, quality-60 re-encode of a photo scores ~0.92 against it; distinct
# Caltech-101 photos of one class rarely pass 0.9 (and those that do look like copies).
DEFAULT_THRESHOLD = 0.90


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are the same picture. `score` is the lowest linking similarity."""

    ids: tuple[int, ...]
    paths: tuple[str, ...]
    exact: bool
    score: float


def exact_groups(catalog: Catalog) -> Iterator[DuplicateGroup]:
    """Groups of files with identical bytes (same content hash)."""
    for group in catalog.hash_groups():
        yield DuplicateGroup(tuple(i for i, _ in group), tuple(p for _, p in group), True, 1.0)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.weakest: dict[int, float] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while self.parent.get(x, x) != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int, score: float) -> None:
        ra, rb = self.find(a), self.find(b)
        low = min(score, self.weakest.get(ra, 1.0), self.weakest.get(rb, 1.0))
        if ra != rb:
            ra, rb = min(ra, rb), max(ra, rb)
            self.parent[rb] = ra
            self.parent.setdefault(ra, ra)
            self.weakest.pop(rb, None)
        self.weakest[ra] = low


def near_groups(catalog: Catalog, index: SearchIndex, threshold: float = DEFAULT_THRESHOLD,
                neighbours: int = 16, block: int = 1024,
                progress: Callable[[str, int, int], None] | None = None) -> list[DuplicateGroup]:
    """Groups of images whose vectors are at least `threshold` similar, transitively.

    Includes exact duplicates (similarity 1). Each image looks at `neighbours`
    candidates; a larger group than that is still joined through its members. On an
    approximate index the candidates are re-scored with the stored vectors (fetched
    for one block at a time), so the threshold applies to true similarities.
    """
    uf = _UnionFind()
    total, done = index.ntotal, 0
    for ids, vectors in catalog.iter_vectors(block):
        scores, found = index.search(vectors, (neighbours + 1) * index.rerank)
        if not index.exact:
            scores = _exact_scores(catalog, vectors, found)
        for row, image_id in enumerate(ids):
            for s, other in zip(scores[row], found[row]):
                if other >= 0 and other != image_id and s >= threshold:
                    uf.union(int(image_id), int(other), float(s))
        done += len(ids)
        if progress:
            progress("comparing", done, total)
    return _groups_of(uf, catalog)


def _groups_of(uf: _UnionFind, catalog: Catalog) -> list[DuplicateGroup]:
    """The joined sets of `uf` of two or more images, in order of their first id."""
    members: dict[int, list[int]] = {}
    for x in list(uf.parent):
        members.setdefault(uf.find(x), []).append(x)
    groups = [sorted(m) for m in members.values() if len(m) > 1]
    rows = catalog.rows_by_id(i for g in groups for i in g)
    out = []
    for g in sorted(groups):
        hashes = {rows[i].content_hash for i in g if i in rows}
        out.append(DuplicateGroup(tuple(g), tuple(rows[i].path for i in g if i in rows),
                                  len(hashes) == 1, round(uf.weakest[uf.find(g[0])], 6)))
    return out


def _exact_scores(catalog: Catalog, vectors: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Similarity of each block vector to each of its candidates (-inf where none or removed)."""
    stored = catalog.vectors(int(i) for i in np.unique(found[found >= 0]))
    out = np.full(found.shape, -np.inf, np.float32)
    for row, candidates in enumerate(found):
        for col, other in enumerate(candidates):
            vec = stored.get(int(other))
            if vec is not None:
                out[row, col] = float(vectors[row] @ vec)
    return out


def fold(ids: list[int], vectors: Mapping[int, np.ndarray], hashes: Mapping[int, str | None],
         threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, list[int]]]:
    """Fold a ranked list: each id joins the first kept id it duplicates.

    Returns (kept id, [its duplicates]) in rank order.
    """
    kept: list[tuple[int, list[int]]] = []
    for i in ids:
        for head, dups in kept:
            same_bytes = hashes.get(i) is not None and hashes.get(i) == hashes.get(head)
            if same_bytes or float(vectors[i] @ vectors[head]) >= threshold:
                dups.append(i)
                break
        else:
            kept.append((i, []))
    return kept


# ---------------------------------------------------------------------- a second signal

# 64-bit DCT hashes (imagehash.phash). A half-size, quality-50 JPEG of a sample photo
# is 0-2 bits from its original; the closest two distinct sample photos are 14 apart.
PHASH_MAX_BITS = 8


def confirm_by_phash(catalog: Catalog, groups: Sequence[DuplicateGroup],
                     max_bits: int = PHASH_MAX_BITS) -> list[DuplicateGroup]:
    """Each group split into the copies that a perceptual hash also calls the same picture.

    Embeddings group what *looks alike*, which for burst shots or one scene taken twice
    is more than copies; a DCT hash of the pixels changes little under resizing and
    re-encoding but a lot under another shot. Only group members are decoded, so this
    costs a fraction of the indexing run. Byte-identical files stay together; a file
    that cannot be decoded any more drops out of its group.

    Raises:
        RetrievalError: imagehash is not installed (the ``phash`` extra).
    """
    imagehash = require_imagehash()
    from .errors import BadImageError
    from .images.decode import load_image

    out: list[DuplicateGroup] = []
    for group in groups:
        rows = catalog.rows_by_id(group.ids)
        vectors = catalog.vectors(group.ids)
        hashes = {}
        for i in group.ids:
            try:
                hashes[i] = imagehash.phash(load_image(rows[i].path, draft_size=64).image)
            except (BadImageError, KeyError):  # gone or changed since indexing; or removed meanwhile
                continue
        uf = _UnionFind()
        for a, b in itertools.combinations(sorted(hashes), 2):
            if rows[a].content_hash == rows[b].content_hash or hashes[a] - hashes[b] <= max_bits:
                uf.union(a, b, float(vectors[a] @ vectors[b]) if a in vectors and b in vectors else 1.0)
        out += _groups_of(uf, catalog)
    return sorted(out, key=lambda g: g.ids)


def require_imagehash() -> ModuleType:
    """The imagehash module (a front end checks for it before a long search).

    Raises:
        RetrievalError: it is not installed (the ``phash`` extra).
    """
    try:
        import imagehash
    except ImportError:
        raise RetrievalError("the perceptual hash needs imagehash: pip install 'retrieve[phash]'") from None
    return imagehash


# ---------------------------------------------------------------------- what to keep


@dataclass(frozen=True)
class Copy:
    """One file of a duplicate group, with what a person weighs when choosing which to keep."""

    id: int
    path: str
    size: int  # bytes, as indexed
    mtime_ns: int
    width: int | None
    height: int | None
    date: datetime  # when taken (EXIF, the camera's clock) or else last modified, local time
    taken: bool  # whether `date` is the date taken

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


# Each rule: which end of which order wins. min and max return the first of equals, and
# the copies come in path order, so ties go to the first path.
KEEP_RULES: dict[str, tuple[Callable[..., Copy], Callable[[Copy], Any]]] = {
    "largest": (max, lambda c: (c.pixels, c.size)),  # most pixels; of those, most bytes (least compressed)
    "oldest": (min, lambda c: c.date),
    "newest": (max, lambda c: c.date),
    "path-order": (min, lambda c: c.path),
}


def copies_of(catalog: Catalog, group: DuplicateGroup) -> list[Copy]:
    """The group's files that are still indexed, in path order, with size, pixels and date."""
    rows = catalog.rows_by_id(group.ids)
    return sorted((_copy(rows[i]) for i in group.ids if i in rows), key=lambda c: c.path)


def _copy(row: ImageRow) -> Copy:
    taken = _taken(row.taken_at)
    date = taken or datetime.fromtimestamp(row.mtime_ns / 1e9).replace(microsecond=0)
    return Copy(row.id, row.path, row.size, row.mtime_ns, row.width, row.height, date, taken is not None)


def _taken(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:  # a camera's clock can write nonsense; then the file's date it is
        return None


def keeper(copies: Sequence[Copy], rule: str) -> Copy:
    """The copy to keep under `rule` (one of KEEP_RULES).

    Raises:
        UnknownNameError: another rule.
    """
    if rule not in KEEP_RULES:
        raise UnknownNameError(f"unknown keep rule {rule!r}; choose {', '.join(KEEP_RULES)}")
    pick, key = KEEP_RULES[rule]
    return pick(sorted(copies, key=lambda c: c.path), key=key)
