"""Finding the same object: the two-stage search of an index that keeps local features.

The global vector finds the same *kind* of thing; a phone photo of one book among a
thousand covers needs the same *object*. The first stage puts the right image in a short
list: the global ranking and the bag-of-visual-words ranking (the local-feature index)
fused by reciprocal rank. The second stage verifies the short list geometrically: local
features matched and a homography fitted (USAC_MAGSAC); images the verifier judges to
show the same object (:class:`~retrieval.local.SpatialVerifier`: enough inliers, or most of
their matches consistent) move ahead, most inliers first, and the rest keep their global
order, so a query whose object is not planar (a scene, a building) loses nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .bundle import WriteLock
from .catalog import STATUS_OK, Catalog
from .catalog.facts import PhotoFacts
from .errors import RetrievalError

if TYPE_CHECKING:
    from .bundle.local_cache import LocalCache
    from .filters import Filter
    from .images.batches import LocalExtract
    from .local import LocalFeatures, RootSift, SpatialVerifier, Verification
    from .local.index import LocalIndex
    from .query import BuiltQuery, Hit

__all__ = ["SHORTLIST", "LocalSide", "Reranker"]

log = logging.getLogger(__name__)

SHORTLIST = 50
"""Candidates verified per query: fused recall@50 was 1.0 on both real instance sets
measured (the right reference always in the list), and verifying 50 costs ~100 ms here."""


class LocalSide:
    """The local features of one bundle: what extracts them (indexed and query side), their
    index (a cache of the catalog, in `file`) and the two-stage search. Nothing heavy
    (OpenCV, FAISS, the query code) loads before it is used.

    Args:
        settings: ``{"name": ..., "params": {...}}`` as the bundle records them.
    """

    def __init__(self, file: Path, catalog: Catalog, digest: str, settings: Mapping[str, Any]) -> None:
        self.file, self.catalog, self.digest, self.settings = file, catalog, digest, dict(settings)

    @functools.cached_property
    def extractor(self) -> RootSift:
        """What extracts an indexed image's local features."""
        from . import local

        return local.EXTRACTORS.create(self.settings["name"], self.settings["params"])

    @functools.cached_property
    def query_extractor(self) -> RootSift:
        """The query side's extractor: half the contrast threshold of the indexed side. A
        phone photo of an object is softer and lower in contrast than a clean reference;
        on development photos of paintings, 0.04 -> 0.02 found 2-4x the keypoints and
        the right painting for 0.70 -> 0.96 of the queries, at no cost to book covers."""
        return dataclasses.replace(self.extractor, contrast_threshold=self.extractor.contrast_threshold / 2)

    @functools.cached_property
    def cache(self) -> LocalCache:
        """The local-feature index (vocabulary and inverted file), kept in step with the catalog."""
        from .bundle.local_cache import LocalCache

        return LocalCache(self.file, self.catalog, self.digest, self.settings)

    def extract(self) -> LocalExtract:
        """The picklable step the decode workers run on each indexed image."""
        from .images.batches import LocalExtract

        return LocalExtract(self.extractor.extract, self.extractor.max_side)

    def require(self, path: Path, wanted: str | Mapping[str, Any] | None) -> None:
        """Raise unless these are the local features asked for (None asks nothing)."""
        if wanted is not None:
            require_local(path, self.settings, wanted)

    def search(self, built: BuiltQuery, global_hits: Sequence[Hit], k: int, excluded: set[int],
               where: Filter | Mapping[str, Any] | None, lock: WriteLock) -> list[Hit]:
        """The two stages for a one-image query (see :class:`Reranker`); `global_hits` is the
        global ranking, at least :data:`SHORTLIST` long when the collection allows."""
        from .local import LocalFeatures, SpatialVerifier
        from .query import allowed_ids

        if built.local is not None:  # extracted while the network embedded the query
            features = built.local
        elif built.image is not None:
            features = self.query_extractor.extract(built.image)
        else:
            assert built.indexed_id is not None
            stored = self.catalog.local_features([built.indexed_id]).get(built.indexed_id)
            features = LocalFeatures.from_bytes(stored) if stored else LocalFeatures.empty(1, 1)
        reranker = Reranker(self.catalog, self.cache.read(lock), SpatialVerifier())
        hits = reranker.rerank(features, built.vector, global_hits, k, excluded, allowed_ids(self.catalog, where))
        if built.scale == 1.0:
            return hits
        return [replace(h, region=tuple((x * built.scale, y * built.scale) for x, y in h.region)) if h.region else h
                for h in hits]


def require_local(path: Path, have: Mapping[str, Any] | None, wanted: str | Mapping[str, Any]) -> None:
    """Raise unless a bundle keeping `have` (None: no local features) keeps what is `wanted`:
    local features are chosen when an index is created."""
    from .opening import local_settings

    settings = local_settings(wanted)
    if settings != have:
        kept = f"keeps {have}" if have else "keeps no local features"
        raise RetrievalError(f"the index at {path} {kept}, not {settings}: local features are chosen "
                             "when an index is created (index into a new --index-dir)")


@dataclass
class Reranker:
    """The two stages for one query, given the first stage's global hits.

    Args:
        shortlist: how many fused candidates are verified.
    """

    catalog: Catalog
    local_index: LocalIndex
    verifier: SpatialVerifier
    shortlist: int = SHORTLIST

    def rerank(self, query: LocalFeatures, query_vector: np.ndarray, global_hits: Sequence[Hit], k: int,
               exclude: set[int], allowed: np.ndarray | None) -> list[Hit]:
        """The k best hits: `global_hits` (the global ranking, at least `shortlist` long
        when the collection allows) fused with the visual-word ranking into a short list
        and the short list verified; verified hits first, most inliers first, then every
        other hit in its global order (a candidate only the words found and that did not
        verify is not promoted: category search must lose nothing to re-ranking).

        `exclude` and `allowed` (a filter's ids, or None) apply to the word ranking as
        they applied to the global one.
        """
        from .local import reciprocal_rank_fusion, rerank

        if len(query) == 0:  # flat or tiny query image: no keypoints, global order
            return list(global_hits[:k])
        n = self.shortlist
        words = [i for i, _ in self.local_index.search(query, n + len(exclude), allowed) if i not in exclude]
        fused = reciprocal_rank_fusion([[h.id for h in global_hits[:n]], words], limit=n)
        hits = self._hits(fused, global_hits, query_vector)
        verdicts = self._verify(query, [h.id for h in hits])
        checked = {h.id: replace(h, inliers=v.inliers, region=region) for h, (v, region) in zip(hits, verdicts)}
        verified = {h.id for h, (v, _) in zip(hits, verdicts) if v.verified}
        by_id = {**{h.id: h for h in global_hits}, **checked}
        in_global = {h.id for h in global_hits}
        found_by_words = [i for i in checked if i not in in_global and i in verified]
        ranking = [h.id for h in global_hits] + found_by_words
        inliers = [by_id[i].inliers or 0 for i in ranking]
        return [by_id[i] for i in rerank(ranking, inliers, [i in verified for i in ranking])[:k]]

    def _hits(self, ids: Sequence[int], global_hits: Sequence[Hit], query_vector: np.ndarray) -> list[Hit]:
        """Hits for fused ids: the global ones as they were, word-ranking ones made from
        their rows (ok ones only), scored by the same cosine as the global stage."""
        from .query import Hit

        known = {h.id: h for h in global_hits}
        missing = [i for i in ids if i not in known]
        rows = self.catalog.rows_by_id(missing)
        vectors = self.catalog.vectors(missing)
        for i in missing:
            row = rows.get(i)
            if row is not None and row.status == STATUS_OK and i in vectors:
                known[i] = Hit(i, row.path, float(vectors[i] @ query_vector), dict(row.meta or {}),
                               photo=PhotoFacts.of_row(row))
        return [known[i] for i in ids if i in known]

    def _verify(self, query: LocalFeatures, ids: Sequence[int]
                ) -> list[tuple[Verification, tuple[tuple[float, float], ...] | None]]:
        """(verification, region of a verified one) per candidate; one whose stored
        features cannot be read (a damaged row) is left unverified, with a warning."""
        from .local import LocalFeatures, Verification

        stored = self.catalog.local_features(ids)
        features: list[Any] = []
        for i in ids:
            try:
                features.append(LocalFeatures.from_bytes(stored[i]) if i in stored else None)
            except ValueError as e:
                log.warning("local features of image %d cannot be read (%s); not verifying it", i, e)
                features.append(None)
        present = [f for f in features if f is not None]
        results = iter(self.verifier.verify_many(query, present) if present else [])
        out: list[tuple[Verification, tuple[tuple[float, float], ...] | None]] = []
        for f in features:
            if f is None:
                out.append((Verification(0), None))
                continue
            v = next(results)
            region = tuple((float(x), float(y)) for x, y in v.corners) if v.corners is not None else None
            out.append((v, region if v.verified else None))
        return out
