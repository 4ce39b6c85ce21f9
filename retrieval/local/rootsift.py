"""RootSIFT features from OpenCV's SIFT, extracted at a bounded resolution.

RootSIFT (Arandjelovic & Zisserman, 2012) is SIFT L1-normalised and square-rooted: the
dot product of two RootSIFT vectors is the Hellinger kernel of the SIFT histograms, which
matches and clusters better than SIFT's Euclidean distance, at no cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar, Union

import numpy as np

from ..errors import BadImageError, RetrievalError
from ..registry import Param
from .features import DESCRIPTOR_SCALE, LocalFeatures
from .opencv import opencv
from .settings import check_fields

if TYPE_CHECKING:
    from PIL import Image

    ImageInput = Union[Image.Image, np.ndarray]

__all__ = ["RootSift"]


@dataclass(frozen=True)
class RootSift:
    """Extracts RootSIFT :class:`LocalFeatures` from a PIL image or a uint8 array.

    The image is converted to grayscale and, when its long side exceeds `max_side` pixels
    (640 by default), reduced so that it is `max_side` before detection: the cap is part
    of the contract. It bounds the time and memory of one extraction whatever the input
    (a 100-Mpx photo costs what a 640-px one does, after the reduction) and puts every
    image at a comparable scale. Keypoints are reported in the original image's frame.

    An image whose long side is below `min_side` (0, off, by default) is enlarged to it
    first: small reference images (a 300-px thumbnail of a painting matched against an
    800-px photo) then yield keypoints at the scales the photo shows.

    The `max_features` strongest keypoints by detector response are kept (1,000 by
    default: ~144 kB stored per image). An image where SIFT finds nothing (flat colour,
    a few pixels) gives empty features, never an error.
    """

    max_features: int = 1000
    max_side: int = 640
    contrast_threshold: float = 0.04  # OpenCV's default; lower finds more (weaker) keypoints
    min_side: int = 0

    kind: ClassVar[str] = "rootsift"
    PARAMS: ClassVar[Mapping[str, Param]] = {
        "max_features": Param(int, low=16, high=20_000, help="keypoints kept per image, strongest first"),
        "max_side": Param(int, low=64, high=4096, help="long side (px) the image is reduced to before detection"),
        "contrast_threshold": Param(float, low=0.0, high=1.0, help="SIFT's contrast threshold"),
        "min_side": Param(int, low=0, high=4096, help="long side (px) smaller images are enlarged to (0: never)"),
    }

    def __post_init__(self) -> None:
        check_fields(self)
        if self.min_side > self.max_side:
            raise RetrievalError(f"min_side {self.min_side} exceeds max_side {self.max_side}")

    def extract(self, image: ImageInput) -> LocalFeatures:
        """RootSIFT features of `image` (a PIL image of any mode, or a uint8 array:
        (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA).

        Raises:
            BadImageError: an array that is not uint8 or not shaped like an image.
        """
        cv2 = opencv()
        gray = _grayscale(image, cv2)
        height, width = gray.shape
        long_side = max(height, width)
        scale = min(1.0, self.max_side / long_side) if long_side >= self.min_side else self.min_side / long_side
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR)
        sift = cv2.SIFT_create(nfeatures=self.max_features, contrastThreshold=self.contrast_threshold)
        found, raw = sift.detectAndCompute(gray, None)
        if raw is None or not found:
            return LocalFeatures.empty(width, height)
        # SIFT's own cap keeps ties with the last response, so it can return a few more
        keep = np.argsort([-k.response for k in found], kind="stable")[: self.max_features]
        keypoints = np.array([(*found[i].pt, found[i].size, found[i].angle) for i in keep], np.float32)
        keypoints = _to_original_frame(keypoints, gray.shape, (height, width))
        return LocalFeatures(keypoints, _root(raw[keep]), width, height)


def _grayscale(image: ImageInput, cv2: ModuleType) -> np.ndarray:
    """A 2-D uint8 array of the image's luminance (ITU-R 601, as Pillow's "L")."""
    if not isinstance(image, np.ndarray):
        return np.asarray(image.convert("L"))
    array: np.ndarray = image
    if array.dtype != np.uint8:
        raise BadImageError(f"an image array must be uint8, not {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2GRAY if array.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        array = cv2.cvtColor(np.ascontiguousarray(array), code)
    if array.ndim != 2 or array.size == 0:
        raise BadImageError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4) and not empty, "
                            f"not {list(array.shape)}")
    return np.ascontiguousarray(array)


def _to_original_frame(keypoints: np.ndarray, resized: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
    """Keypoints detected on the resized image, in the original's pixel frame: pixel
    centres map as (x + 0.5) / s - 0.5 (OpenCV's resampling grid), sizes as 1 / s;
    positions stay inside the image's pixel edges."""
    sy, sx = resized[0] / original[0], resized[1] / original[1]
    if sx == 1.0 and sy == 1.0:
        return keypoints
    out = keypoints.copy()
    out[:, 0] = np.clip((keypoints[:, 0] + 0.5) / sx - 0.5, -0.5, original[1] - 0.5)
    out[:, 1] = np.clip((keypoints[:, 1] + 0.5) / sy - 0.5, -0.5, original[0] - 0.5)
    out[:, 2] = keypoints[:, 2] * 2.0 / (sx + sy)
    return out


def _root(sift: np.ndarray) -> np.ndarray:
    """SIFT -> RootSIFT (L1-normalise, square root), quantised to bytes."""
    l1 = sift.sum(axis=1, keepdims=True)
    root = np.sqrt(sift / np.maximum(l1, 1e-12))
    return np.clip(np.rint(root * DESCRIPTOR_SCALE), 0, 255).astype(np.uint8)
