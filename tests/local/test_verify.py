"""Spatial verification: a photo of a poster verifies with many inliers and its corners
where the known homography puts them; other posters, flat images and wild models do not."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from retrieval.errors import RetrievalError
from retrieval.local import LocalFeatures, RootSift, SpatialVerifier, rerank
from retrieval.local.geometry import corners_in_query, plausible

from .scenes import homography, mapped_corners, photo

def mapped(model: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by a 3x3 model."""
    return cv2.perspectiveTransform(points[None].astype(np.float64), model.astype(np.float64))[0]


def test_a_photo_verifies_and_its_corners_are_where_the_homography_put_them(
        snapshot, poster_features: list[LocalFeatures], extractor: RootSift) -> None:
    image, model, index = snapshot
    result = SpatialVerifier().verify(extractor.extract(image), poster_features[index])
    assert result.inliers >= 50
    assert result.corners is not None and result.corners.shape == (4, 2)
    expected = mapped_corners(model, 480, 360)
    assert np.abs(result.corners - expected).max() < 3.0


def test_a_cropped_zoomed_photo_maps_corners_outside_the_query(posters: list[np.ndarray],
                                                               poster_features: list[LocalFeatures],
                                                               extractor: RootSift) -> None:
    """Half the poster fills the photo: its corners land far beyond the photo's edges,
    where small errors grow; inside the photo the mapping they define is the true one."""
    model = homography(480, 360, seed=3, scale=1.8, shift=(0, 0), angle=-5.0)
    image = photo(posters[3], model, (480, 360), seed=3, gain=1.2, offset=-10.0)
    result = SpatialVerifier().verify(extractor.extract(image), poster_features[3])
    assert result.inliers >= 30 and result.corners is not None
    expected = mapped_corners(model, 480, 360)
    assert (expected[:, 0].min() < -100) and (expected[:, 0].max() > 580)  # the crop is real
    fitted = cv2.getPerspectiveTransform(mapped_corners(np.eye(3), 480, 360).astype(np.float32), result.corners)
    grid = np.stack(np.meshgrid(np.linspace(0, 479, 25), np.linspace(0, 359, 19)), -1).reshape(-1, 2)
    inside = grid[[0 <= x < 480 and 0 <= y < 360 for x, y in mapped(model, grid)]]
    error = np.linalg.norm(mapped(fitted, inside) - mapped(model, inside), axis=1)
    assert len(inside) > 50 and error.max() < 3.0


def test_other_posters_are_not_verified(snapshot, poster_features: list[LocalFeatures], extractor: RootSift) -> None:
    image, _, index = snapshot
    results = SpatialVerifier().verify_many(extractor.extract(image), poster_features)
    assert results[index].inliers >= 50 and results[index].verified
    assert not any(r.verified for i, r in enumerate(results) if i != index)


def test_verification_promotes_the_photo_source_and_keeps_the_rest_in_order(
        snapshot, poster_features: list[LocalFeatures], extractor: RootSift) -> None:
    image, _, index = snapshot
    shortlist = [i for i in range(len(poster_features)) if i != index]
    shortlist.insert(5, index)  # the first stage ranked it sixth
    results = SpatialVerifier().verify_many(extractor.extract(image), [poster_features[i] for i in shortlist])
    reranked = rerank(shortlist, [r.inliers for r in results], [r.verified for r in results])
    assert reranked[0] == index
    assert reranked[1:] == [i for i in shortlist if i != index]


def test_batch_and_single_verification_agree(snapshot, poster_features: list[LocalFeatures],
                                             extractor: RootSift) -> None:
    """Stacking candidates (one with no features among them) changes no result."""
    query = extractor.extract(snapshot[0])
    candidates = [poster_features[6], LocalFeatures.empty(50, 50), poster_features[7], poster_features[8]]
    verifier = SpatialVerifier()
    batch = verifier.verify_many(query, candidates)
    single = [verifier.verify(query, c) for c in candidates]
    assert [b.inliers for b in batch] == [s.inliers for s in single]
    assert batch[1].inliers == 0 and batch[1].corners is None
    assert batch[2].inliers >= 50


def test_empty_features_verify_nothing_without_error(poster_features: list[LocalFeatures]) -> None:
    flat = RootSift().extract(np.full((300, 400), 200, np.uint8))
    verifier = SpatialVerifier()
    assert verifier.verify(flat, poster_features[0]).inliers == 0
    assert verifier.verify(poster_features[0], flat).inliers == 0
    assert [r.inliers for r in verifier.verify_many(poster_features[0], [])] == []


def test_fewer_matches_than_the_minimum_are_not_fitted(poster_features: list[LocalFeatures]) -> None:
    """Only 6 features: even a perfect copy cannot reach min_matches=8."""
    f = poster_features[0]
    few = LocalFeatures(f.keypoints[:6], f.descriptors[:6], f.width, f.height)
    assert SpatialVerifier().verify(few, f).inliers == 0
    assert SpatialVerifier(min_matches=4).verify(few, f).inliers >= 4


def test_settings_are_checked() -> None:
    bad_settings: list[dict[str, Any]] = [{"ratio": 1.5}, {"min_matches": 2}, {"threshold": 0}, {"max_scale": 0.5},
                                          {"consistent_share": 1.5}, {"min_inliers": 0}]
    for bad in bad_settings:
        with pytest.raises(RetrievalError):
            SpatialVerifier(**bad)


SQUARE = np.array([[0, 0], [100, 0], [100, 100], [0, 100]], float)


@pytest.mark.parametrize("quad, ok", [
    (SQUARE, True),
    (SQUARE * 0.5 + 20, True),
    (SQUARE[[0, 1, 3, 2]], False),            # self-crossing (a bow tie)
    (SQUARE[::-1], False),                    # mirrored
    (np.array([[0, 0], [100, 0], [30, 30], [0, 100]], float), False),  # not convex
    (SQUARE * 0.01, False),                   # a speck: 100x smaller
    (SQUARE * 30, False),                     # 30x larger
], ids=["same", "half", "bow-tie", "mirrored", "concave", "speck", "huge"])
def test_plausible_quads(quad: np.ndarray, ok: bool) -> None:
    assert plausible(quad, (100, 100), (100, 100), max_scale=10.0) is ok


def test_plausibility_compares_relative_sizes() -> None:
    """A 50-px reference filling a 1,000-px photo is the same scale, not 20x."""
    assert plausible(SQUARE * 10, (50, 50), (1000, 1000), max_scale=10.0)


def test_corners_across_the_horizon_are_refused() -> None:
    tilted = np.array([[1, 0, 0], [0, 1, 0], [-0.02, 0, 1]], float)  # w = 1 - 0.02 x crosses 0 at x = 50
    assert corners_in_query(tilted, 100, 100) is None
    assert corners_in_query(np.eye(3), 100, 100) is not None


def synthetic_pair(transform: np.ndarray, n: int = 120, clutter: int = 80, seed: int = 0
                   ) -> tuple[LocalFeatures, LocalFeatures]:
    """A 400x300 candidate of `n` features with random (distinct) descriptors, and a
    640x480 query holding the same descriptors at the transformed points, shuffled among
    `clutter` unrelated features: the true matches and their geometry are known."""
    rng = np.random.default_rng(seed)
    points = rng.uniform([10, 10], [390, 290], (n, 2))
    descriptors = rng.integers(0, 256, (n + clutter, 128), dtype=np.uint8)
    moved = mapped(transform, points)
    extra = rng.uniform([0, 0], [639, 479], (clutter, 2))
    order = rng.permutation(n + clutter)

    def features(xy: np.ndarray, d: np.ndarray, size: tuple[int, int]) -> LocalFeatures:
        keypoints = np.column_stack([xy, np.full(len(xy), 4.0), np.zeros(len(xy))]).astype(np.float32)
        return LocalFeatures(keypoints, d, *size)

    candidate = features(points, descriptors[:n], (400, 300))
    query = features(np.vstack([moved, extra])[order], descriptors[order], (640, 480))
    return query, candidate


def test_an_exact_similarity_is_recovered_with_every_match() -> None:
    angle = np.deg2rad(20)
    model = np.array([[1.1 * np.cos(angle), -1.1 * np.sin(angle), 120], [1.1 * np.sin(angle), 1.1 * np.cos(angle), 5],
                      [0, 0, 1]])
    query, candidate = synthetic_pair(model)
    result = SpatialVerifier().verify(query, candidate)
    assert result.inliers >= 115  # of 120 true matches
    assert result.corners is not None
    assert np.abs(result.corners - mapped_corners(model, 400, 300)).max() < 0.5


def test_a_perfect_but_mirrored_fit_promotes_nothing() -> None:
    """Every match agrees with a mirror image, which no photo of a flat object is: both
    the homography and the affine fallback are refused."""
    mirror = np.array([[-1.0, 0, 500], [0, 1.0, 80], [0, 0, 1]])
    query, candidate = synthetic_pair(mirror)
    assert len(query) == 200
    result = SpatialVerifier().verify(query, candidate)
    assert result.inliers == 0 and result.corners is None


@pytest.mark.parametrize("inliers, matches, same", [
    (15, 200, True),    # many inliers: verified whatever the matches
    (12, 14, True),     # few, but nearly every match agrees: a low-texture true pair
    (12, 40, False),    # as many, a small share of the matches: chance agreement
    (9, 9, False),      # every match agrees, but too few to be evidence
])
def test_the_verdict_weighs_inliers_against_the_matches(inliers: int, matches: int, same: bool) -> None:
    assert SpatialVerifier().is_same_object(inliers, matches) is same


def test_a_low_texture_pair_verifies_when_its_few_matches_all_agree() -> None:
    """12 true matches and nothing else: too few for the count alone, all consistent."""
    model = np.array([[0.9, 0.1, 60], [-0.1, 0.9, 40], [0, 0, 1]])
    query, candidate = synthetic_pair(model, n=12, clutter=40, seed=2)
    result = SpatialVerifier().verify(query, candidate)
    assert result.matches == 12 and result.inliers >= 11 and result.verified
    assert not SpatialVerifier(consistent_share=1.0, consistent_inliers=13).verify(query, candidate).verified
