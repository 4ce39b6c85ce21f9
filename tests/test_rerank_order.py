"""The re-ranking rule of the two-stage search, with the stages stubbed: verified
candidates first by inliers; everything else in its global order, so category search
loses nothing; a candidate only the visual words found is promoted only if it verifies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.catalog.facts import PhotoFacts
from retrieval.instance import Reranker
from retrieval.local import LocalFeatures, Verification
from retrieval.query import Hit


@dataclass(frozen=True)
class _Row(PhotoFacts):  # a catalog row: path, status, metadata and the EXIF facts' columns
    path: str = ""
    status: str = "ok"
    meta: dict[str, Any] | None = None


class _Catalog:
    def rows_by_id(self, ids: Any) -> dict[int, _Row]:
        return {int(i): _Row(path=f"/img/{i}.jpg") for i in ids}

    def vectors(self, ids: Any) -> dict[int, np.ndarray]:
        return {int(i): np.ones(4, np.float32) / 2 for i in ids}

    def local_features(self, ids: Any) -> dict[int, bytes]:
        return {int(i): LocalFeatures.empty(10 + int(i), 10).to_bytes() for i in ids}  # width tells the id


class _Words:
    def __init__(self, ranking: list[int]) -> None:
        self.ranking = ranking

    def search(self, features: LocalFeatures, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        return [(i, 1.0) for i in self.ranking[:k]]


class _Verifier:
    def __init__(self, inliers: dict[int, int]) -> None:
        self.inliers = inliers

    def verify_many(self, query: LocalFeatures, candidates: list[LocalFeatures]) -> list[Verification]:
        inliers = [self.inliers.get(c.width - 10, 0) for c in candidates]
        return [Verification(n, matches=100, verified=n >= 15) for n in inliers]


def _query() -> LocalFeatures:
    return LocalFeatures(np.array([[5, 5, 2, 0]], np.float32), np.zeros((1, 128), np.uint8), 10, 10)


def test_verified_first_then_the_global_order_and_words_only_candidates_only_when_verified() -> None:
    global_hits = [Hit(i, f"/img/{i}.jpg", 1.0 - i / 100, {}) for i in (1, 2, 3, 4, 5, 6)]
    words = [9, 5, 8, 2]  # 9 and 8 were found by the words alone
    inliers = {5: 40, 8: 25, 2: 3, 9: 10}  # 5 and 8 verify (>= 15); 2 and 9 do not
    reranker = Reranker(_Catalog(), _Words(words), _Verifier(inliers), shortlist=6)  # type: ignore[arg-type]
    hits = reranker.rerank(_query(), np.ones(4, np.float32) / 2, global_hits, 10, set(), None)
    assert [h.id for h in hits] == [5, 8, 1, 2, 3, 4, 6]
    assert [h.inliers for h in hits[:3]] == [40, 25, 0]


def test_a_query_without_keypoints_keeps_the_global_ranking() -> None:
    global_hits = [Hit(i, f"/img/{i}.jpg", 0.5, {}) for i in (3, 1, 2)]
    reranker = Reranker(_Catalog(), _Words([2, 1]), _Verifier({2: 99}))  # type: ignore[arg-type]
    empty = LocalFeatures.empty(10, 10)
    assert reranker.rerank(empty, np.ones(4, np.float32) / 2, global_hits, 2, set(), None) == global_hits[:2]
