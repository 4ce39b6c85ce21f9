"""Fitting a decoded image to the model's square input: letterbox (keep the aspect
ratio, pad) or squash.

Two implementations of the antialiased bicubic/bilinear resize: Pillow's, and PyTorch's
uint8 kernel, 5x faster on this project's 2-core machine (0.25 against 1.22 ms to fit a
500x218 photo to 288; decoding it takes 0.4 ms). Their canvases agree to 2 levels of 255
(squash: 8) and their vectors to a cosine of at least 0.9999 (tests), as a GPU's canvases
do (images.device). Decode workers use PyTorch's (they import it anyway); a single query
uses Pillow's, so that a query run by an exported graph never imports PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from ..errors import UnknownNameError

__all__ = ["RESIZERS", "CanvasMaker", "Preprocessor", "fit_size", "letterbox"]

RESIZERS = ("pillow", "torch")
_TORCH_MODES = ("bicubic", "bilinear")  # the filters PyTorch antialiases as Pillow does


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


def resized(img: Image.Image, width: int, height: int, interpolation: str, resizer: str = "pillow",
            reducing_gap: float | None = None) -> np.ndarray:
    """`img` (RGB) at `width` x `height` as an HWC uint8 array,
    resized by `resizer` (see the module's docstring); Pillow's for what PyTorch cannot do.
    `reducing_gap` is Pillow's (a box reduction first): PyTorch's filter covers the whole
    reduction itself."""
    if resizer == "torch" and img.mode == "RGB" and interpolation in _TORCH_MODES:
        import torch
        import torch.nn.functional as F

        pixels = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)[None]  # channels-last strides
        out = F.interpolate(pixels, size=(height, width), mode=interpolation, antialias=True, align_corners=False)
        return out[0].permute(1, 2, 0).numpy()
    resample = Image.Resampling[interpolation.upper()]
    return np.asarray(img.resize((width, height), resample, reducing_gap=reducing_gap), dtype=np.uint8)


def letterbox(
    img: Image.Image, size: int, interpolation: str = "bicubic", resizer: str = "pillow"
) -> tuple[np.ndarray, int, int]:
    """Resize so the longer side is `size`, keeping the aspect ratio, and pad to a square.

    The image sits in the top-left corner of a `size` x `size` grey canvas; the
    returned height and width say which part is real, so pooling can ignore the rest.

    Returns:
        (HWC uint8 array of shape (size, size, 3), valid height, valid width)
    """
    w, h = fit_size(img.width, img.height, size)
    pixels = resized(img, w, h, interpolation, resizer, reducing_gap=3.0) if (w, h) != img.size \
        else np.asarray(img, dtype=np.uint8)
    canvas = np.full((size, size, 3), 128, dtype=np.uint8)
    canvas[:h, :w] = pixels
    return canvas, h, w


@dataclass(frozen=True)
class Preprocessor:
    """Picklable image -> uint8 canvas step, run in decode workers.

    `resize` is "letterbox" (keep the aspect ratio, pad) or "squash" (the classic
    stretch to a square, kept to reproduce published baselines). `resizer` is whose
    resize runs (:data:`RESIZERS`); not part of an index's manifest, since both give the
    same vectors to the cosine that runtimes agree to.
    """

    image_size: int
    resize: str = "letterbox"
    interpolation: str = "bicubic"
    resizer: str = "pillow"

    def __post_init__(self) -> None:
        if self.resizer not in RESIZERS:
            raise UnknownNameError(f"unknown resizer {self.resizer!r}; choose {', '.join(RESIZERS)}")

    def __call__(self, img: Image.Image) -> tuple[np.ndarray, int, int]:
        if self.resize == "squash":
            size = self.image_size
            return resized(img, size, size, self.interpolation, self.resizer), size, size
        return letterbox(img, self.image_size, self.interpolation, self.resizer)

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an upright image of this size takes on the canvas."""
        if self.resize == "squash":
            return self.image_size, self.image_size
        return fit_size(width, height, self.image_size)
