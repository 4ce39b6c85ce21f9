"""Random views of a training image: crop, mirror, colour; then the extractor's own canvas.

Metric learning on a few thousand photos overfits without them. The result is the same
(canvas, valid height, valid width) that :class:`~retrieval.images.Preprocessor` gives,
so an :class:`Augment` drops into :class:`~retrieval.images.DecodeDataset` in its place.
Randomness comes from torch's generator, which the DataLoader seeds per worker from the
trainer's seed, so runs repeat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

from ..images.preprocess import Preprocessor

__all__ = ["Augment"]


@dataclass(frozen=True)
class Augment:
    """Picklable random view maker, run in decode workers.

    A crop keeps between `min_scale` and all of the area, with an aspect ratio changed
    by up to a third; half the views are mirrored; brightness, contrast and saturation
    each change by a factor within 1 +- `jitter`.
    """

    preprocess: Preprocessor
    min_scale: float = 0.5
    jitter: float = 0.3

    @property
    def image_size(self) -> int:  # read by DecodeDataset: JPEG draft decoding, reducing large images
        return self.preprocess.image_size

    def __call__(self, img: Image.Image) -> tuple[np.ndarray, int, int]:
        return self.preprocess(self.view(img))

    def view(self, img: Image.Image) -> Image.Image:
        """One random view of `img`, at its own scale."""
        area = img.width * img.height * _uniform(self.min_scale, 1.0)
        aspect = math.exp(_uniform(math.log(3 / 4), math.log(4 / 3)))
        w = min(img.width, max(1, round(math.sqrt(area * aspect))))
        h = min(img.height, max(1, round(math.sqrt(area / aspect))))
        x = int(torch.randint(img.width - w + 1, ()))
        y = int(torch.randint(img.height - h + 1, ()))
        img = img.crop((x, y, x + w, y + h))
        if float(torch.rand(())) < 0.5:
            img = ImageOps.mirror(img)
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(_uniform(1 - self.jitter, 1 + self.jitter))
        return img


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))
