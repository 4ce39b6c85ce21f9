"""Spatial verification: does a candidate image show what the query shows, in a geometry
that one planar view of it explains?

Tentative matches (ratio-tested nearest neighbours, :mod:`.matching`) are fitted with a
homography by OpenCV's MAGSAC++, which needs no hand-tuned inlier threshold beyond a
maximum; when the homography is missing or implausible (:mod:`.geometry`) an affine model
is tried, since a near-planar object seen from afar is affine and its fit is better
conditioned. The inlier count is the evidence; the candidate's corners mapped into the
query are the matched region, for display.

When is a candidate the same object? Either the model explains many matches
(`min_inliers`), or it explains fewer but most of the tentative matches there were
(`consistent_inliers` and `consistent_share`). The second rule is for low-texture
objects (a painting behind glare, a soft landscape) whose true pair has only 10-20
tentative matches, nearly all consistent; a wrong candidate's chance inliers are a small
share of its matches (at most ~1/3 on development photos, where wrong candidates reached
13 inliers, and true ones with under 20 inliers had 70-90% of their matches consistent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..registry import Param
from .features import LocalFeatures
from .geometry import corners_in_query, plausible
from .matching import tentative_matches
from .opencv import opencv
from .settings import check_fields

__all__ = ["SpatialVerifier", "Verification"]


@dataclass(frozen=True)
class Verification:
    """The outcome for one candidate.

    Attributes:
        inliers: matches the model explains (0 when no plausible model was found).
        corners: float32 (4, 2), the candidate image's corners (top-left, top-right,
            bottom-right, bottom-left) in the query's original pixel frame, or None.
        matches: the tentative matches the model was fitted to.
        verified: whether the verifier judged it the same object (module docstring).
    """

    inliers: int
    corners: np.ndarray | None = None
    matches: int = 0
    verified: bool = False


@dataclass(frozen=True)
class SpatialVerifier:
    """Verifies candidates against a query by local-feature matches and a geometric model.

    Attributes:
        max_features: only each image's first (strongest) this many features take part:
            matching costs query features x candidate features, so this bounds the time.
        ratio: Lowe's ratio test: a match is kept when its distance is below `ratio`
            times the second nearest's.
        threshold: MAGSAC++'s maximum reprojection error, as a fraction of the query's
            long side (0.01: 6.4 px on a 640-px query), so one setting fits any resolution.
        min_matches: below this many tentative matches a candidate is not fitted (0 inliers).
        max_scale: a model that makes the candidate more than this many times larger or
            smaller (relative to each image's size) than it is is rejected.
        max_iterations, confidence: MAGSAC++'s sampling budget and stopping confidence.
        min_inliers: inliers from which a candidate is verified whatever its matches.
        consistent_inliers, consistent_share: fewer inliers, down to `consistent_inliers`,
            verify a candidate when they are at least this share of its tentative matches.
    """

    max_features: int = 1000
    ratio: float = 0.8
    threshold: float = 0.01
    min_matches: int = 8
    max_scale: float = 10.0
    max_iterations: int = 2000
    confidence: float = 0.999
    min_inliers: int = 15
    consistent_inliers: int = 10
    consistent_share: float = 0.5

    PARAMS: ClassVar[Mapping[str, Param]] = {
        "max_features": Param(int, low=4, high=100_000, help="strongest features per image that are matched"),
        "ratio": Param(float, low=0.1, high=1.0, help="Lowe's ratio test"),
        "threshold": Param(float, low=1e-4, high=0.2, help="max reprojection error, fraction of the query's side"),
        "min_matches": Param(int, low=4, high=10_000, help="tentative matches needed to fit a model"),
        "max_scale": Param(float, low=1.0, high=1000.0, help="largest scale change a model may imply"),
        "max_iterations": Param(int, low=10, high=100_000, help="MAGSAC++ iterations at most"),
        "confidence": Param(float, low=0.5, high=0.999999, help="MAGSAC++ stopping confidence"),
        "min_inliers": Param(int, low=4, high=10_000, help="inliers that verify a candidate"),
        "consistent_inliers": Param(int, low=4, high=10_000,
                                    help="fewest inliers that verify when they are most of the matches"),
        "consistent_share": Param(float, low=0.0, high=1.0, help="that share of the tentative matches"),
    }

    def __post_init__(self) -> None:
        check_fields(self)

    def verify(self, query: LocalFeatures, candidate: LocalFeatures) -> Verification:
        """One candidate; see :meth:`verify_many`."""
        return self.verify_many(query, [candidate])[0]

    def verify_many(self, query: LocalFeatures, candidates: Sequence[LocalFeatures]) -> list[Verification]:
        """Each candidate verified against the query (one descriptor search for all).

        Features without keypoints, or too few matches, give 0 inliers, never an error.
        """
        matches = tentative_matches(query, candidates, self.ratio, self.max_features)
        return [self._fit(query, candidate, pairs) for candidate, pairs in zip(candidates, matches)]

    def _fit(self, query: LocalFeatures, candidate: LocalFeatures, pairs: np.ndarray) -> Verification:
        unverified = Verification(0, matches=len(pairs))
        if len(pairs) < self.min_matches:
            return unverified
        cv2 = opencv()
        source = np.ascontiguousarray(candidate.points[pairs[:, 1]])
        target = np.ascontiguousarray(query.points[pairs[:, 0]])
        threshold = self.threshold * max(query.width, query.height)
        try:
            model, mask = cv2.findHomography(source, target, cv2.USAC_MAGSAC, threshold,
                                             maxIters=self.max_iterations, confidence=self.confidence)
            found = self._accept(model, mask, query, candidate, len(pairs))
            # Fall back to an affine model only where it could change the verdict: no
            # homography, or an implausible one that explains many matches. A wrong
            # candidate's few chance inliers are not worth the (slower) affine search.
            if found is None and (model is None or np.count_nonzero(mask) >= self.min_matches):
                affine, mask = cv2.estimateAffine2D(source, target, method=cv2.USAC_MAGSAC,
                                                    ransacReprojThreshold=threshold, maxIters=self.max_iterations,
                                                    confidence=self.confidence)
                model = None if affine is None else np.vstack([affine, [0.0, 0.0, 1.0]])
                found = self._accept(model, mask, query, candidate, len(pairs))
        except cv2.error:  # degenerate point sets (all collinear, all identical) in some OpenCV paths
            return unverified
        return found or unverified

    def is_same_object(self, inliers: int, matches: int) -> bool:
        """The verdict for `inliers` explained out of `matches` tentative ones (module docstring)."""
        return inliers >= self.min_inliers or (
            inliers >= self.consistent_inliers and inliers >= self.consistent_share * matches)

    def _accept(self, model: np.ndarray | None, mask: np.ndarray | None, query: LocalFeatures,
                candidate: LocalFeatures, matches: int) -> Verification | None:
        """The verification a fitted model gives, or None if there is none or it is implausible."""
        if model is None or mask is None:
            return None
        quad = corners_in_query(model, candidate.width, candidate.height)
        if quad is None or not plausible(quad, (candidate.width, candidate.height), (query.width, query.height),
                                         self.max_scale):
            return None
        inliers = int(np.count_nonzero(mask))
        return Verification(inliers, quad.astype(np.float32), matches, self.is_same_object(inliers, matches))
