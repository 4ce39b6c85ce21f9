"""Query assembly: from what a caller hands to `search` to ranked hits.

One query is one unit vector. Items are combined (mean of their unit vectors): image
files (an indexed, unchanged file is looked up rather than re-embedded), PIL images,
vectors, and indexed ids. The search itself is one widening loop: ask the ANN index for
more candidates until k hits survive the exclusions, the status check and the dedup fold,
or the index has nothing more to give.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np
from PIL import Image

from . import ann, duplicates
from .catalog import STATUS_OK, Catalog
from .catalog.facts import PhotoFacts
from .errors import BadImageError, BadQueryError
from .filters import Filter
from .images.decode import DecodedImage, load_image

__all__ = ["BuiltQuery", "allowed_ids", "MAX_K", "Hit", "Query", "QueryItem", "QueryBuilder", "check_k", "nearest", "rocchio", "stored_vectors",
           "unit"]

MAX_K = 10_000
"""The most results one search returns: a larger k is a mistake (and would allocate
k x dim floats per candidate round), not a request."""

QueryItem = Union[str, os.PathLike, Image.Image, np.ndarray, int]
Query = Union[QueryItem, Sequence[QueryItem]]
"""A path, a PIL image, a vector, an indexed image's id, or a list of them (combined)."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    path: str
    score: float
    metadata: dict[str, Any]
    duplicates: tuple[str, ...] = ()  # with dedup: paths of lower-ranked copies folded into this hit
    # With re-ranking (an index with local features): local-feature matches the geometric
    # model explains (0: not verified), and where this image appears in the query, as its
    # corners (top-left, top-right, bottom-right, bottom-left) in the query image's pixels.
    inliers: int | None = None
    region: tuple[tuple[float, float], ...] | None = None
    photo: PhotoFacts | None = None  # what the image's EXIF says: when, with what, where


@dataclass(frozen=True)
class BuiltQuery:
    """A query made ready: its unit vector, the indexed images among its items (left out
    of the results), and, when it is one image, that image (decoded) or its id (indexed):
    what a local-feature re-rank starts from."""

    vector: np.ndarray
    own_ids: set[int]
    image: Image.Image | None = None
    indexed_id: int | None = None
    scale: float = 1.0  # the query file's size over `image`'s (decoding may reduce it)
    local: Any = None  # `image`'s local features, when asked for with the embedding


def check_k(k: object) -> int:
    """k as an int, if it is one from 1 to MAX_K.

    Raises:
        BadQueryError: anything else (0, negatives, floats, bools, huge values).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise BadQueryError(f"k must be an integer from 1 to {MAX_K}, not {k!r}")
    return int(k)


def unit(vector: np.ndarray, what: str, dim: int) -> np.ndarray:
    """`vector` as a float32 unit row vector of the index's dimension.

    Raises:
        BadQueryError: wrong size, non-finite values, or zero length (no direction to search).
    """
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != dim:
        raise BadQueryError(f"{what} has dimension {v.shape[0]}, the index {dim}")
    if not np.isfinite(v).all():
        raise BadQueryError(f"{what} holds NaN or infinite values")
    norm = float(np.linalg.norm(v))
    if norm < 1e-12:
        raise BadQueryError(f"{what} is zero: it points nowhere to search")
    return v / norm


def rocchio(liked: np.ndarray, disliked: np.ndarray | None, weight: float, dim: int) -> np.ndarray:
    """mean(liked) - weight * mean(disliked), as a unit vector (Rocchio's relevance feedback).

    Raises:
        BadQueryError: the dislikes cancel the likes (nothing is left to search for), or
            the weight is not a finite non-negative number.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < float("inf"):
        raise BadQueryError(f"negative_weight must be a finite number of at least 0, not {weight!r}")
    q = liked.mean(0)
    if disliked is not None and len(disliked):
        q = q - weight * disliked.mean(0)
    return unit(q, "the liked images minus the disliked ones", dim)


@dataclass(frozen=True)
class _Gathered:
    """One query between :meth:`QueryBuilder._gather` and the embedding of its images."""

    item_count: int
    vectors: list[np.ndarray]
    own_ids: set[int]
    images: list[Image.Image]
    scales: list[float]

    def combine(self, embedded: Sequence[np.ndarray], dim: int, local: Any = None) -> BuiltQuery:
        """The built query, given the embeddings of `images` (in their order) and, for a
        one-image query, that image's local features."""
        vectors = self.vectors + [unit(v, "embedded query image", dim) for v in embedded]
        vector = unit(np.sum(vectors, axis=0), "the combined query", dim)
        single = self.item_count == 1
        return BuiltQuery(vector, self.own_ids, self.images[0] if single and self.images else None,
                          next(iter(self.own_ids)) if single and len(self.own_ids) == 1 else None,
                          self.scales[0] if single and self.scales else 1.0, local)


class QueryBuilder:
    """Turns query items into one unit vector, with the ids of indexed items to leave out.

    `embed_images` is the engine's query-stage embedder: called once, for all images.
    Query files are decoded as indexed files are, reduced early to about `image_size`
    (so a huge query costs no more memory than a huge indexed file). `local_extract`, in
    an index that keeps local features, extracts a query image's: asked for, it runs in a
    thread while the network embeds (both release the GIL), which took ~40-50 ms off a
    re-ranked query here, the embedding's time.
    """

    def __init__(self, catalog: Catalog, dim: int, image_size: int,
                 embed_images: Callable[[list[Image.Image]], np.ndarray], local_side: int = 0,
                 local_extract: Callable[[Image.Image], Any] | None = None) -> None:
        self.catalog, self.dim, self.image_size, self.embed_images = catalog, dim, image_size, embed_images
        self.draft_size = max(image_size, local_side)  # local features look at up to local_side px
        self.local_extract = local_extract

    @functools.cached_property
    def _beside(self) -> ThreadPoolExecutor:
        """The thread that extracts local features while the network embeds."""
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-local-features")

    def build(self, query: Query, local: bool = False) -> BuiltQuery:
        """The query's unit vector, the indexed images among its items, and its one image.

        Raises:
            BadQueryError: an empty query, an item of an unsupported type, a folder, an
                unknown id, or a vector that cannot be searched with.
            BadImageError: a query file cannot be decoded.
        """
        return self.build_many([query], local)[0]

    def build_many(self, queries: Sequence[Query], local: bool = False) -> list[BuiltQuery]:
        """:meth:`build` for each query, with the images of all of them embedded in ONE
        call: one forward pass for a batch of searches (a server's concurrent requests,
        a command's list of query files). With `local`, each one-image query also gets
        that image's local features (see the class). Raises as :meth:`build`, for the
        first bad query."""
        gathered = [self._gather(q) for q in queries]
        beside: dict[int, Future[Any]] = {}
        if local and self.local_extract is not None:
            beside = {n: self._beside.submit(self.local_extract, g.images[0]) for n, g in enumerate(gathered)
                      if g.item_count == 1 and len(g.images) == 1}
        images = [image for g in gathered for image in g.images]
        embedded = iter(self.embed_images(images) if images else ())
        return [g.combine([next(embedded) for _ in g.images], self.dim, beside[n].result() if n in beside else None)
                for n, g in enumerate(gathered)]

    def _gather(self, query: Query) -> _Gathered:
        """A query's items sorted out: vectors found without the model, images to embed."""
        items = list(query) if isinstance(query, (list, tuple)) else [query]
        if not items:
            raise BadQueryError("empty query: give an image, a vector or an indexed id")
        vectors: list[np.ndarray] = []
        own_ids: set[int] = set()
        images: list[Image.Image] = []
        scales: list[float] = []
        ids: list[int] = []
        for item in items:
            if isinstance(item, np.ndarray):
                rows = item.reshape(1, -1) if item.ndim <= 1 else item
                vectors.extend(unit(r, "query vector", self.dim) for r in rows)
            elif isinstance(item, Image.Image):
                images.append(item.convert("RGB"))
                scales.append(1.0)
            elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                ids.append(int(item))
            elif isinstance(item, (str, os.PathLike)):
                indexed = self._indexed_unchanged(os.fspath(item))
                if indexed is not None:
                    own_ids.add(indexed[0])
                    vectors.append(indexed[1])
                else:
                    decoded = self._load(os.fspath(item), self.draft_size)
                    images.append(decoded.image)
                    scales.append(max(decoded.width, decoded.height) / max(decoded.image.size))
            else:
                raise BadQueryError(f"cannot search with a {type(item).__name__}: give an image path, a PIL "
                                    "image, a vector or an indexed id")
        if ids:
            stored = self.catalog.vectors(ids)
            unknown = [i for i in ids if i not in stored]
            if unknown:
                raise BadQueryError(f"no indexed image with id {unknown[0]}")
            own_ids.update(ids)
            vectors.extend(unit(stored[i], f"stored vector of id {i}", self.dim) for i in ids)
        return _Gathered(len(items), vectors, own_ids, images, scales)

    @staticmethod
    def _load(path: str, draft_size: int) -> DecodedImage:
        if os.path.isdir(path):
            raise BadQueryError(f"query {path} is a folder: give image files (or index the folder)")
        try:
            return load_image(path, draft_size=draft_size)
        except BadImageError as e:
            raise BadImageError(f"query image {path}: {e}") from None

    def _indexed_unchanged(self, path: str) -> tuple[int, np.ndarray] | None:
        """An indexed file that still has the size and mtime it was embedded with."""
        path = os.path.abspath(path)
        row = self.catalog.rows_by_path([path]).get(path)
        if row is None or row.status != STATUS_OK:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            return None
        vec = self.catalog.vectors([row.id]).get(row.id)
        return (row.id, vec) if vec is not None else None


def nearest(index: ann.SearchIndex, catalog: Catalog, q: np.ndarray, k: int, exclude: Iterable[int] = (),
            where: Filter | Mapping[str, Any] | None = None, dedup: float | None = None) -> list[Hit]:
    """The k best hits for unit vector `q`: the one widening loop of every search.

    Each round asks the index for `want` candidates (times its re-rank factor; re-scored
    exactly, for approximate backends). When the index comes back short of that, the
    same search is repeated at a higher effort (more cells, a wider beam, finally an exact
    scan). Then `exclude`, rows that are no longer ok and, with `dedup` (a similarity
    threshold), copies folded into the best-ranked one are left out; short of k hits, the
    next round asks for twice as many candidates, until the index has no more.
    """
    k = check_k(k)
    if dedup is not None and not (isinstance(dedup, (int, float)) and -1.0 <= dedup <= 1.0):
        raise BadQueryError(f"dedup must be a similarity from -1 to 1, not {dedup!r}")
    excluded = set(exclude)
    q = np.asarray(q, np.float32).reshape(1, -1)
    allowed = allowed_ids(catalog, where)
    if allowed is not None and len(allowed) == 0:
        return []
    want, effort = k + len(excluded), 0
    while True:
        asked = want * index.rerank
        found = ann.search_reranked(index, q, want, catalog.vectors, allowed, effort)
        if len(found) < asked and effort < index.max_effort(asked):
            effort += 1  # the index came back short (cells, beam or nodes too few): search harder
            continue
        pairs = [(i, s) for i, s in found if i not in excluded]
        rows = catalog.rows_by_id(i for i, _ in pairs)
        hits = [Hit(i, rows[i].path, s, dict(rows[i].meta or {}), photo=PhotoFacts.of_row(rows[i])) for i, s in pairs
                if i in rows and rows[i].status == STATUS_OK]
        if dedup is not None and hits:
            hits = _fold_duplicates(hits, {i: rows[i].content_hash for i, _ in pairs if i in rows}, catalog, dedup)
        if len(hits) >= k or len(found) < asked or want >= index.ntotal:
            return hits[:k]
        want *= 2  # too many left out: ask for more


def allowed_ids(catalog: Catalog, where: Filter | Mapping[str, Any] | None) -> np.ndarray | None:
    """The ids a filter admits, or None when there is no filter (an empty one is none)."""
    conditions = Filter.of(where)
    return catalog.ids_matching(conditions.conditions()) if conditions else None


def _fold_duplicates(hits: list[Hit], hashes: Mapping[int, str | None], catalog: Catalog,
                     threshold: float) -> list[Hit]:
    """Each group of copies as its best-ranked hit, listing the others' paths."""
    by_id = {h.id: h for h in hits}
    folded = duplicates.fold([h.id for h in hits], catalog.vectors(list(by_id)),
                             {i: hashes.get(i) for i in by_id}, threshold)
    return [replace(by_id[head], duplicates=tuple(by_id[d].path for d in dups)) for head, dups in folded]


def stored_vectors(catalog: Catalog, ids: Sequence[int], what: str) -> np.ndarray:
    """Stored unit vectors of indexed images, (len(ids), dim).

    Raises:
        BadQueryError: an id is not an integer or not indexed.
    """
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
    if bad:
        raise BadQueryError(f"{what}: ids are integers, not {bad[0]!r}")
    found = catalog.vectors([int(i) for i in ids])
    missing = [i for i in ids if int(i) not in found]
    if missing:
        raise BadQueryError(f"{what}: no indexed image with id {missing[0]}")
    return np.stack([found[int(i)] for i in ids]) if ids else np.zeros((0, 0), np.float32)
