"""Retrieval quality of an index on labelled images: what ``retrieve eval`` reports.

The gallery is indexed through the Engine (only what is missing or changed is
embedded), queries are embedded in batches as the Engine embeds queries (denoised if
it is set to), and the metrics come from :func:`retrieval.evaluation.evaluate`, which
ranks in blocks of queries: memory grows with the gallery, never with its square.
Ranking is exact over the stored vectors, so the numbers measure the extractor, not
the approximation of an ANN index.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..catalog import STATUS_OK
from ..engine import Engine
from ..errors import RetrievalError
from ..extractors import Extractor
from ..images.batches import default_workers
from ..images.embedding import EmbedLoop
from ..options import Progress
from .labels import LabelledImages
from .metrics import RetrievalScores, evaluate

__all__ = ["EvalReport", "evaluate_engine", "embed_files"]


@dataclass
class EvalReport:
    """Scores and what they were computed on."""

    scores: RetrievalScores
    gallery: int  # gallery images embedded and ranked
    queries: int  # queries asked (some may have had no relevant gallery image)
    leave_one_out: bool
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        s = self.scores
        return {"map": round(s.map, 6), "precision_at": {str(k): round(v, 6) for k, v in s.precision_at.items()},
                "recall_at": {str(k): round(v, 6) for k, v in s.recall_at.items()},
                "queries_scored": s.queries, "queries": self.queries, "gallery": self.gallery,
                "leave_one_out": self.leave_one_out, "seconds": round(self.seconds, 2),
                "failed": [{"path": p, "error": e} for p, e in self.failed]}


def evaluate_engine(engine: Engine, gallery: LabelledImages, queries: LabelledImages | None = None,
                    ks: Sequence[int] = (1, 5, 10), progress: Progress | None = None) -> EvalReport:
    """mAP, precision@k and recall@k of `engine` on labelled images.

    Args:
        gallery: the images ranked; added to the index if missing.
        queries: the images searched with; None queries every gallery image against the
            others (leave-one-out). A query that is also in the gallery is left out of
            its own ranking.

    Raises:
        RetrievalError: no gallery image could be embedded, or no query has a relevant one.
    """
    start = time.perf_counter()
    report = engine.add(gallery.paths, progress=progress)
    failed = list(report.failed)
    rows = engine.catalog.rows_by_path(gallery.paths)
    kept = [i for i, p in enumerate(gallery.paths) if p in rows and rows[p].status == STATUS_OK]
    if not kept:
        raise RetrievalError("no gallery image could be embedded")
    g_ids = [rows[gallery.paths[i]].id for i in kept]
    g_labels = [gallery.labels[i] for i in kept]
    g_vecs = engine.vectors(g_ids)
    if queries is None:
        q_vecs, q_labels, q_ids = g_vecs, g_labels, g_ids
    else:
        id_of = {gallery.paths[i]: g for i, g in zip(kept, g_ids)}
        own = [i for i, p in enumerate(queries.paths) if p in id_of]  # reuse: left out of their own ranking
        new = [i for i, p in enumerate(queries.paths) if p not in id_of]
        vecs, ok, bad = embed_files(engine.embedder("query"), [queries.paths[i] for i in new],
                                    engine.options.batch_size, default_workers(engine.options.workers), progress)
        failed += bad
        q_vecs = np.concatenate([engine.vectors([id_of[queries.paths[i]] for i in own]) if own else
                                 np.empty((0, g_vecs.shape[1]), np.float32), vecs])
        q_labels = [queries.labels[i] for i in own] + [queries.labels[new[j]] for j in ok]
        q_ids = [id_of[queries.paths[i]] for i in own] + [-1 - j for j in ok]  # negative: in no gallery
    scores = evaluate(q_vecs, q_labels, g_vecs, g_labels, ks=tuple(ks), query_ids=q_ids, gallery_ids=g_ids)
    if scores.queries == 0:
        raise RetrievalError("no query has a relevant gallery image (same label): check the labels")
    return EvalReport(scores, len(g_ids), len(q_labels), queries is None, failed, time.perf_counter() - start)


def embed_files(extractor: Extractor, paths: Sequence[str], batch_size: int, workers: int,
                progress: Progress | None = None) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Embed image files in batches: (vectors, positions in `paths` they belong to, failures)."""
    loop = EmbedLoop(paths, extractor.preprocessor, lambda b: extractor.embed_adaptive(b.pixels, b.heights, b.widths),
                     batch_size=batch_size, workers=workers, device=extractor.device, progress=progress,
                     phase="queries")
    vectors, ok = [], []
    for batch, vecs in loop:
        if vecs is not None:
            vectors.append(vecs)
            ok += batch.indices
    failed = [(paths[i], why) for i, why in loop.failures]
    return (np.concatenate(vectors) if vectors else np.empty((0, extractor.dim), np.float32)), ok, failed
