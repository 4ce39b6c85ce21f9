"""OpenCV, imported on first use: it is an optional extra (``retrieve[local]``), and
importing it costs time that ``import retrieval`` must not pay."""

from __future__ import annotations

import functools
from types import ModuleType

from ..errors import LocalFeaturesUnavailableError

__all__ = ["LocalFeaturesUnavailableError", "opencv"]


@functools.cache
def opencv() -> ModuleType:
    """The ``cv2`` module, or the error that says how to install it."""
    try:
        import cv2
    except ImportError as e:
        raise LocalFeaturesUnavailableError(
            f"local features need OpenCV ({e}): pip install 'retrieve[local]'") from None
    return cv2
