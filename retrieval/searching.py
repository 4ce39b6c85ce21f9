"""The Engine's searches: by image, vector or id, batches of them, similar, recommend,
duplicates; and the stored vectors themselves. A part of :class:`retrieval.engine.Engine`
(which inherits it), kept apart so that each module holds one concept; the ranking itself
is :mod:`.query` and, for the same object, :mod:`.instance`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import duplicates
from .errors import BadQueryError

if TYPE_CHECKING:
    from pathlib import Path

    from .ann import SearchIndex
    from .bundle import WriteLock
    from .catalog import Catalog
    from .extractors import Manifest
    from .instance import LocalSide
    from .filters import Filter
    from .options import Progress
    from .query import BuiltQuery, Hit, Query, QueryBuilder

__all__ = ["Searching"]


class Searching:
    """The search methods of :class:`~retrieval.engine.Engine`."""

    if TYPE_CHECKING:  # what the Engine provides
        path: Path
        catalog: Catalog
        manifest: Manifest
        _local: LocalSide | None
        _lock: WriteLock
        local_features: dict[str, Any] | None

        @property
        def ann(self) -> SearchIndex: ...

        @property
        def _queries(self) -> QueryBuilder: ...

    def embed(self, query: Query) -> np.ndarray:
        """One unit vector for a query: a path, a PIL image, a vector, an indexed id, or
        several of them combined.

        Raises:
            BadImageError: a query file cannot be decoded.
            BadQueryError: the query cannot be searched with (see :meth:`search`).
        """
        return self._queries.build(query).vector

    def search(self, query: Query, k: int = 10, where: Filter | Mapping[str, Any] | None = None,
               exclude: Iterable[int] = (), dedup: float | None = None, rerank: bool | None = None) -> list[Hit]:
        """The k indexed images most similar to the query.

        `query` is an image path, a PIL image, a vector, an indexed image's id, or a list
        of them, combined into one (mean of their unit vectors). An indexed, unchanged
        path is looked up rather than re-embedded; indexed items are left out of the
        results. `where` is a :class:`Filter`, or a mapping of metadata values. `dedup`,
        a similarity threshold (e.g. 0.95), folds copies and near-copies into the
        best-ranked one (listed in `Hit.duplicates`) and still returns k hits.

        `rerank` (default: on when the index keeps local features) finds the same object
        first (see :mod:`.instance`): for a query that is one image or one indexed id,
        the global ranking is fused with the visual-word ranking and the short list
        verified geometrically; hits carry `inliers` and the matched `region`. Other
        queries (vectors, several items) rank globally.

        Raises:
            BadQueryError: k is not from 1 to MAX_K; the query is empty, of an unsupported
                type, a folder, an unknown id, or a zero, non-finite or wrong-size vector;
                `rerank` asked of an index without local features.
            BadImageError: a query file cannot be decoded.
        """
        self._check_search(k, rerank)
        with self.catalog.snapshot():  # one consistent read of the catalog, one transaction
            built = self._queries.build(query, local=self._reranks(rerank))
            return self._ranked(built, k, set(exclude) | built.own_ids, where, dedup, rerank)

    def _check_search(self, k: int, rerank: bool | None) -> None:
        """Refuse a bad k, or re-ranking asked of an index without local features."""
        from .query import check_k

        check_k(k)
        if rerank and self.local_features is None:
            raise BadQueryError(f"the index at {self.path} keeps no local features to re-rank with "
                                "(create one with `retrieve index --local sift`)")

    def _reranks(self, rerank: bool | None) -> bool:
        """Whether a one-image query would be re-ranked with local features."""
        return rerank is not False and self._local is not None

    def _ranked(self, built: BuiltQuery, k: int, excluded: set[int], where: Filter | Mapping[str, Any] | None,
                dedup: float | None, rerank: bool | None) -> list[Hit]:
        """The hits of one built query: the global ranking, re-ranked with local features
        when the index keeps them, `rerank` allows it and the query is one image or id."""
        from .query import nearest

        local = self._local if self._reranks(rerank) else None
        if local is None or (built.image is None and built.indexed_id is None):
            return nearest(self.ann, self.catalog, built.vector, k, excluded, where, dedup)
        from .instance import SHORTLIST

        global_hits = nearest(self.ann, self.catalog, built.vector, max(k, SHORTLIST), excluded, where, dedup)
        return local.search(built, global_hits, k, excluded, where, self._lock)

    def similar(self, image_id: int, k: int = 10, where: Filter | Mapping[str, Any] | None = None,
                dedup: float | None = None) -> list[Hit]:
        """More like this: neighbours of an indexed image, without the image itself."""
        from .query import nearest, stored_vectors, unit

        with self.catalog.snapshot():
            vec = stored_vectors(self.catalog, [image_id], "similar")[0]
            return nearest(self.ann, self.catalog, unit(vec, f"stored vector of id {image_id}", self.manifest.dim),
                           k, {image_id}, where, dedup)

    def recommend(self, positive_ids: Sequence[int], negative_ids: Sequence[int] = (), k: int = 10,
                  where: Filter | Mapping[str, Any] | None = None, negative_weight: float = 0.5) -> list[Hit]:
        """Images like the liked ones and unlike the disliked ones (Rocchio's formula).

        The query is mean(liked) - negative_weight * mean(disliked); the liked and
        disliked images themselves are never returned.

        Raises:
            BadQueryError: no liked id, an unknown id, or dislikes that cancel the likes.
        """
        from .query import check_k, nearest, rocchio, stored_vectors

        if isinstance(positive_ids, (str, bytes)) or not positive_ids:
            raise BadQueryError("recommend needs at least one liked (positive) id")
        check_k(k)
        with self.catalog.snapshot():
            liked = stored_vectors(self.catalog, list(positive_ids), "recommend")
            disliked = stored_vectors(self.catalog, list(negative_ids), "recommend") if negative_ids else None
            q = rocchio(liked, disliked, negative_weight, self.manifest.dim)
            return nearest(self.ann, self.catalog, q, k, set(positive_ids) | set(negative_ids), where)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Stored unit vectors of indexed images, (len(ids), dim).

        Raises:
            BadQueryError: an id is not indexed.
        """
        from .query import stored_vectors

        return stored_vectors(self.catalog, list(ids), "vectors")

    def iter_vectors(self, block: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every indexed image's id and stored unit vector, in id order, in blocks of at most
        `block`: (ids (n,) int64, vectors (n, dim) float32). For exports and models of one's
        own over any size of index: one block is in memory at a time.

        The blocks are read in one snapshot of the catalog, as are other reads made
        between them on this thread (:meth:`image_infos` of a block's ids): a concurrent
        indexing run changes none of what one iteration sees. Exhaust or close the iterator
        to end the snapshot.

        Raises:
            BadQueryError: `block` is not a positive integer.
        """
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise BadQueryError(f"block must be a positive integer, not {block!r}")

        def blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:  # a generator: the check above runs at the call
            with self.catalog.snapshot():
                yield from self.catalog.iter_vectors(block)

        return blocks()

    def duplicates(self, threshold: float | None = duplicates.DEFAULT_THRESHOLD,
                   progress: Progress | None = None) -> list[duplicates.DuplicateGroup]:
        """Groups of duplicate images: identical bytes, plus near-copies when `threshold`
        (a cosine similarity) is set; None lists exact duplicates only."""
        if threshold is None:
            return list(duplicates.exact_groups(self.catalog))
        return duplicates.near_groups(self.catalog, self.ann, threshold, progress=progress)

    def search_many(self, queries: Sequence[Query], k: int = 10, where: Filter | Mapping[str, Any] | None = None,
                    dedup: float | None = None, rerank: bool | None = None) -> list[list[Hit]]:
        """:meth:`search` for each query (its hits, in order), with the images of all of
        them embedded in one forward pass: a batch of queries costs about one.

        Raises:
            as :meth:`search`, for the first bad query; then none is answered.
        """
        self._check_search(k, rerank)
        with self.catalog.snapshot():
            return [self._ranked(b, k, set(b.own_ids), where, dedup, rerank)
                    for b in self._queries.build_many(list(queries), local=self._reranks(rerank))]
