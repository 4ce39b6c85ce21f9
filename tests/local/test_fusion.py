"""Reciprocal-rank fusion and the verified-first re-ranking rule, on small hand-made
rankings whose expected order follows from the formulas."""

from __future__ import annotations

import pytest

from retrieval.errors import BadQueryError
from retrieval.local import reciprocal_rank_fusion, rerank


def test_fusion_sums_reciprocal_ranks() -> None:
    # 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62; 4: 1/63
    assert reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]]) == [1, 3, 2, 4]


def test_an_id_in_both_rankings_beats_a_first_place_in_one() -> None:
    # 9 is 1st in one ranking only (1/61); 5 is 2nd in both (2/62 > 1/61)
    assert reciprocal_rank_fusion([[9, 5], [7, 5]])[0] == 5


def test_weights_scale_each_ranking() -> None:
    # weight 3 on the second: 3 scores 1/63 + 3/61 = 0.06505, 1 scores 1/61 + 3/62 = 0.06478
    assert reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], weights=[1.0, 3.0])[:2] == [3, 1]
    assert reciprocal_rank_fusion([[1, 2], [2, 1]], weights=[0.0, 1.0]) == [2, 1]


def test_small_k_favours_the_top_ranks() -> None:
    # 1 is 1st and 10th, 2 is 3rd twice. k=1: 1/2 + 1/11 = 0.591 beats 2/4 = 0.5;
    # k=60: 1/61 + 1/70 = 0.0307 loses to 2/63 = 0.0317
    rankings = [[1, 5, 2], [6, 7, 2, 8, 9, 10, 11, 12, 13, 1]]
    assert reciprocal_rank_fusion(rankings, k=1)[0] == 1
    assert reciprocal_rank_fusion(rankings, k=60)[0] == 2


def test_ties_keep_first_appearance_and_repeats_count_once() -> None:
    assert reciprocal_rank_fusion([[1, 2], [2, 1]]) == [1, 2]
    assert reciprocal_rank_fusion([[2, 1], [1, 2]]) == [2, 1]
    # a repeat of 1 in the first ranking is ignored: 1 and 2 tie as in the line above
    assert reciprocal_rank_fusion([[1, 1, 2], [2, 1]]) == [1, 2]
    assert reciprocal_rank_fusion([[1, 2, 3], [3]], limit=2) == [3, 1]  # 3: 1/63 + 1/61
    assert reciprocal_rank_fusion([[], []]) == []


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": float("nan")}, {"weights": [1.0]}, {"weights": [1.0, -1.0]},
                                    {"weights": [1.0, float("inf")]}, {"limit": -1}])
def test_bad_fusion_arguments(kwargs: dict) -> None:
    with pytest.raises(BadQueryError):
        reciprocal_rank_fusion([[1], [2]], **kwargs)


def test_verified_move_ahead_in_inlier_order_the_rest_keep_theirs() -> None:
    shortlist = ["a", "b", "c", "d", "e", "f"]
    inliers = [0, 30, 5, 30, 50, 14]
    verified = [n >= 15 for n in inliers]
    assert rerank(shortlist, inliers, verified) == ["e", "b", "d", "a", "c", "f"]
    verified[5] = True  # a verdict, not a count, decides: 14 inliers that were most of the matches
    assert rerank(shortlist, inliers, verified) == ["e", "b", "d", "f", "a", "c"]


def test_nothing_verified_keeps_the_first_stage_order() -> None:
    assert rerank([3, 1, 2], [0, 40, 2], [False, False, False]) == [3, 1, 2]
    assert rerank([], [], []) == []


def test_bad_rerank_arguments() -> None:
    with pytest.raises(BadQueryError):
        rerank([1, 2], [10], [True, True])
    with pytest.raises(BadQueryError):
        rerank([1, 2], [10, 3], [True])
