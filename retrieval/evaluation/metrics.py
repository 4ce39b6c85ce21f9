"""Retrieval metrics for category retrieval, computed in blocks of queries.

Memory is O(block x gallery), never gallery x gallery, so a 100k-image gallery costs a
few hundred MB per block rather than 40 GB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RetrievalScores", "average_precision", "evaluate"]


@dataclass(frozen=True)
class RetrievalScores:
    """Means over all queries that have at least one relevant gallery item."""

    map: float
    precision_at: dict[int, float]
    recall_at: dict[int, float]
    queries: int


def average_precision(ranked_relevance: np.ndarray, n_relevant: int) -> float:
    """AP of one ranking: the mean of precision@i over the ranks i of relevant items.

    Args:
        ranked_relevance: booleans, gallery order by decreasing score.
        n_relevant: how many relevant items exist (some may be ranked past the end).
    """
    if n_relevant == 0:
        return 0.0
    hits = np.flatnonzero(ranked_relevance)
    precisions = np.arange(1, len(hits) + 1) / (hits + 1)
    return float(precisions.sum() / n_relevant)


def evaluate(
    queries: np.ndarray,
    query_labels: Sequence[object],
    gallery: np.ndarray,
    gallery_labels: Sequence[object],
    ks: Sequence[int] = (1, 5, 10),
    query_ids: Sequence[int] | None = None,
    gallery_ids: Sequence[int] | None = None,
    block: int = 256,
) -> RetrievalScores:
    """mAP, precision@k and recall@k of inner-product ranking.

    When a query also appears in the gallery (same id in `query_ids` and
    `gallery_ids`), it is left out of its own ranking, as in leave-one-out retrieval.
    Queries with no relevant gallery item are skipped (their AP is undefined).
    """
    codes: dict[object, int] = {}  # labels compare by equality, so 1 and "1" stay distinct classes
    g_codes = np.array([codes.setdefault(x, len(codes)) for x in [*query_labels, *gallery_labels]], np.int64)
    q_lab, g_lab = g_codes[: len(query_labels)], g_codes[len(query_labels):]
    g_ids = np.asarray(gallery_ids) if gallery_ids is not None else None
    q_ids = np.asarray(query_ids) if query_ids is not None else None
    pos_of_id = {int(i): p for p, i in enumerate(g_ids)} if g_ids is not None else {}
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    per_label = np.bincount(g_lab, minlength=len(codes))

    aps: list[float] = []
    p_at = {k: [] for k in ks}
    r_at = {k: [] for k in ks}
    for start in range(0, len(queries), block):
        sims = np.asarray(queries[start:start + block], dtype=np.float32) @ gallery.T  # (B, N)
        for row, qi in enumerate(range(start, min(start + block, len(queries)))):
            s = sims[row]
            n_rel = int(per_label[q_lab[qi]])
            if q_ids is not None and g_ids is not None and int(q_ids[qi]) in pos_of_id:
                s = s.copy()
                own = pos_of_id[int(q_ids[qi])]
                s[own] = -np.inf
                n_rel -= int(g_lab[own] == q_lab[qi])
            if n_rel <= 0:
                continue
            order = np.argsort(-s, kind="stable")
            if not np.isfinite(s[order[-1]]):
                order = order[:-1]
            rel = g_lab[order] == q_lab[qi]
            aps.append(average_precision(rel, n_rel))
            for k in ks:
                hits = int(rel[:k].sum())
                p_at[k].append(hits / k)
                r_at[k].append(hits / n_rel)
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0  # noqa: E731
    return RetrievalScores(mean(aps), {k: mean(v) for k, v in p_at.items()},
                           {k: mean(v) for k, v in r_at.items()}, len(aps))
