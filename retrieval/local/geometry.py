"""Where a fitted model puts a candidate image in the query, and whether that is plausible.

A model fitted to mostly wrong matches tends to be wild: it folds the image over itself,
mirrors it, sends a corner to infinity or shrinks the image to a speck. Such a model must
not promote a candidate, whatever its inlier count.
"""

from __future__ import annotations

import numpy as np

__all__ = ["corners_in_query", "plausible"]


def corners_in_query(model: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """float64 (4, 2): the candidate's outer pixel corners (top-left, top-right,
    bottom-right, bottom-left) mapped by the 3x3 `model`, in query pixel coordinates
    (pixel centres at integers); None when a corner maps to or across infinity."""
    x0, y0, x1, y1 = -0.5, -0.5, width - 0.5, height - 0.5
    corners = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]])
    mapped = corners @ model.T
    w = mapped[:, 2]
    if not np.isfinite(mapped).all() or not ((w > 1e-12).all() or (w < -1e-12).all()):
        return None
    return mapped[:, :2] / w[:, None]


def plausible(quad: np.ndarray, candidate_size: tuple[int, int], query_size: tuple[int, int],
              max_scale: float) -> bool:
    """True when the mapped corners form a convex, unmirrored quadrilateral whose size,
    relative to the query's, is within `max_scale` either way of the candidate's size
    relative to itself (both measured against the image's long side, so a small reference
    image and a large phone photo of the same object count as the same scale)."""
    edges = np.roll(quad, -1, axis=0) - quad
    following = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * following[:, 1] - edges[:, 1] * following[:, 0]
    if not (turns > 0).all():  # the source rectangle turns the same way at every corner
        return False
    area = 0.5 * float(np.sum(quad[:, 0] * np.roll(quad[:, 1], -1) - np.roll(quad[:, 0], -1) * quad[:, 1]))
    cw, ch = candidate_size
    qw, qh = query_size
    relative = (area / max(qw, qh) ** 2) / (cw * ch / max(cw, ch) ** 2)
    return 1.0 / max_scale**2 <= relative <= max_scale**2
