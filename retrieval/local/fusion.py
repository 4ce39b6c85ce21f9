"""Combining rankings: reciprocal-rank fusion for the short list, and the re-ranking rule
that puts verified candidates first.

Reciprocal-rank fusion (Cormack et al., 2009) needs no score calibration between the
global cosine and the tf-idf cosine, whose scales have nothing in common: an image's
fused score is ``sum_r weight_r / (k + rank_r)``, rank counted from 1, over the rankings
that hold it. The constant k damps the weight of the first few ranks (60 in the paper).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

from ..errors import BadQueryError

__all__ = ["reciprocal_rank_fusion", "rerank"]

Id = TypeVar("Id", bound=Hashable)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Id]], k: float = 60.0,
                           weights: Sequence[float] | None = None, limit: int | None = None) -> list[Id]:
    """The ids of all `rankings` (each best first), best fused score first; at most `limit`.

    An id repeated within one ranking counts at its first (best) rank. Equal fused scores
    keep the order in which the ids first appear, reading the rankings one after another,
    so the first ranking breaks ties.

    Raises:
        BadQueryError: `k` not positive, weights not one finite non-negative number per
            ranking, or `limit` below 0.
    """
    if not (math.isfinite(k) and k > 0):
        raise BadQueryError(f"the fusion constant k must be a positive number, not {k!r}")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings) or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise BadQueryError(f"fusion needs one finite weight >= 0 per ranking ({len(rankings)}), got {list(weights)}")
    if limit is not None and limit < 0:
        raise BadQueryError(f"limit must be at least 0, not {limit}")
    scores: dict[Id, float] = {}
    for ranking, weight in zip(rankings, weights):
        seen: set[Id] = set()
        for rank, item in enumerate(ranking, start=1):
            if item not in seen:
                seen.add(item)
                scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    fused = sorted(scores, key=lambda item: -scores[item])  # sorted() is stable: ties keep first appearance
    return fused if limit is None else fused[:limit]


def rerank(shortlist: Sequence[Id], inliers: Sequence[int], verified: Sequence[bool]) -> list[Id]:
    """The short list (in first-stage order) re-ordered by verification: the `verified`
    candidates first, most inliers first (ties in first-stage order), then the others in
    their first-stage order, so a query whose object is not planar (a building, a scene),
    where nothing verifies, keeps its first-stage ranking.

    Raises:
        BadQueryError: `inliers` or `verified` is not one entry per short-list entry.
    """
    if not len(inliers) == len(verified) == len(shortlist):
        raise BadQueryError(f"{len(inliers)} inlier counts and {len(verified)} verdicts for a short list "
                            f"of {len(shortlist)}")
    first = sorted((i for i in range(len(shortlist)) if verified[i]), key=lambda i: -inliers[i])
    rest = [i for i in range(len(shortlist)) if not verified[i]]
    return [shortlist[i] for i in first + rest]
