"""Fitting a decoded image to the model's square input: letterbox (keep the aspect
ratio, pad) or squash."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

__all__ = ["CanvasMaker", "Preprocessor", "fit_size", "letterbox"]


class CanvasMaker(Protocol):
    """What decode workers run on each image: a :class:`Preprocessor`, or anything shaped
    like one (a training augmentation). `image_size` is the canvas side, which also sets
    how far a large image may be reduced while it is decoded."""

    @property
    def image_size(self) -> int: ...

    def __call__(self, img: Image.Image) -> tuple[np.ndarray, int, int]: ...


def fit_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `size`: the letterboxed image's size.

    One rule for the host and the device paths, so both give the same valid region.
    """
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def letterbox(
    img: Image.Image, size: int, interpolation: str = "bicubic"
) -> tuple[np.ndarray, int, int]:
    """Resize so the longer side is `size`, keeping the aspect ratio, and pad to a square.

    The image sits in the top-left corner of a `size` x `size` grey canvas; the
    returned height and width say which part is real, so pooling can ignore the rest.

    Returns:
        (HWC uint8 array of shape (size, size, 3), valid height, valid width)
    """
    w, h = fit_size(img.width, img.height, size)
    if (w, h) != img.size:
        resample = Image.Resampling[interpolation.upper()]
        img = img.resize((w, h), resample, reducing_gap=3.0)
    canvas = np.full((size, size, 3), 128, dtype=np.uint8)
    canvas[:h, :w] = np.asarray(img, dtype=np.uint8)
    return canvas, h, w


@dataclass(frozen=True)
class Preprocessor:
    """Picklable image -> uint8 canvas step, run in decode workers.

    `resize` is "letterbox" (keep the aspect ratio, pad) or "squash" (the classic
    stretch to a square, kept to reproduce published baselines).
    """

    image_size: int
    resize: str = "letterbox"
    interpolation: str = "bicubic"

    def __call__(self, img: Image.Image) -> tuple[np.ndarray, int, int]:
        if self.resize == "squash":
            resample = Image.Resampling[self.interpolation.upper()]
            size = self.image_size
            return np.asarray(img.resize((size, size), resample), dtype=np.uint8), size, size
        return letterbox(img, self.image_size, self.interpolation)

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an upright image of this size takes on the canvas."""
        if self.resize == "squash":
            return self.image_size, self.image_size
        return fit_size(width, height, self.image_size)
