"""Image corruptions a denoising autoencoder learns to undo, and benchmarks apply to queries.

All work on float images in [0, 1], shaped (N, 3, H, W), and take an explicit
``torch.Generator`` so that a validation set or a benchmark corrupts the same way every
run. Levels are on the scale people quote: noise sigma on 0-to-1 pixels, the fraction
of salt-and-pepper pixels, JPEG quality, blur sigma in pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..errors import RetrievalError
from ..registry import Param, Registry

__all__ = ["CORRUPTIONS", "CorruptionSettings", "corrupt", "corrupt_image", "random_corruption"]

CORRUPTIONS: Registry[torch.Tensor] = Registry("corruption")
"""Each kind is registered as f(x, gen, level=...) -> a corrupted copy of `x`, with its
level declared (type and range): :func:`corrupt` checks the level before applying it."""


@CORRUPTIONS.register("gaussian", params={"level": Param(float, low=0.0, high=1.0, help="sigma, 0-to-1 pixels")},
                      help="additive Gaussian noise")
def _gaussian(x: torch.Tensor, gen: torch.Generator | None, level: float) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    return (x + level * noise).clamp(0.0, 1.0)


@CORRUPTIONS.register("salt_pepper", params={"level": Param(float, low=0.0, high=1.0, help="fraction of pixels")},
                      help="pixels set to black or white")
def _salt_pepper(x: torch.Tensor, gen: torch.Generator | None, level: float) -> torch.Tensor:
    n, _, h, w = x.shape
    u = torch.rand((n, 1, h, w), generator=gen, device=x.device)
    out = torch.where(u < level / 2, torch.zeros_like(x), x)  # pepper
    return torch.where((u >= level / 2) & (u < level), torch.ones_like(x), out)  # salt


@CORRUPTIONS.register("jpeg", params={"level": Param(float, low=1.0, high=100.0, help="JPEG quality (100: none)")},
                      help="JPEG compression artefacts")
def _jpeg_artefacts(x: torch.Tensor, gen: torch.Generator | None, level: float) -> torch.Tensor:
    return torch.stack([_jpeg(img, int(round(level))) for img in x]) if level < 100 else x.clone()


@CORRUPTIONS.register("blur", params={"level": Param(float, low=0.0, high=10.0, help="sigma in pixels")},
                      help="Gaussian blur")
def _blur(x: torch.Tensor, gen: torch.Generator | None, level: float) -> torch.Tensor:
    if level <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * level))
    return TF.gaussian_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[level, level])


_KIND = {"noise_sigma": "gaussian", "salt_pepper": "salt_pepper", "jpeg_quality": "jpeg", "blur_sigma": "blur"}
"""Each setting of :class:`CorruptionSettings` is the level of this kind."""


@dataclass(frozen=True)
class CorruptionSettings:
    """The strongest corruption of each kind that training draws; 0 (100 for JPEG) turns it off.

    Training draws a kind among those on, then a level between none and this maximum,
    so the autoencoder also learns to leave clean images alone. Each field is the level
    of one kind (``_KIND``), checked against that kind's declared range.
    """

    noise_sigma: float = 0.2  # Gaussian noise standard deviation, 0-to-1 scale
    salt_pepper: float = 0.05  # fraction of pixels set to black or white
    jpeg_quality: int = 15  # lowest JPEG quality used (100: off)
    blur_sigma: float = 1.5  # Gaussian blur standard deviation in pixels

    def __post_init__(self) -> None:
        for f in fields(self):
            CORRUPTIONS.entry(_KIND[f.name]).params["level"].coerce("corruption setting", f.name, getattr(self, f.name))
        if not self.enabled():
            raise RetrievalError("every corruption is turned off: the autoencoder would have nothing to learn")

    def enabled(self) -> list[tuple[str, float, float]]:
        """(kind, weakest, strongest level) of each kind that is on."""
        kinds = [("gaussian", 0.0, self.noise_sigma, self.noise_sigma > 0),
                 ("salt_pepper", 0.0, self.salt_pepper, self.salt_pepper > 0),
                 ("jpeg", float(max(95, self.jpeg_quality)), float(self.jpeg_quality), self.jpeg_quality < 100),
                 ("blur", 0.0, self.blur_sigma, self.blur_sigma > 0)]
        return [(k, lo, hi) for k, lo, hi, on in kinds if on]



def corrupt(x: torch.Tensor, kind: str, level: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """A corrupted copy of `x` ((N, 3, H, W) floats in [0, 1]); level 0 is a plain copy.

    Args:
        kind: a name in :data:`CORRUPTIONS`: gaussian (level = sigma), salt_pepper
            (level = fraction of pixels), jpeg (level = quality, 1 to 100), blur
            (level = sigma in pixels).

    Raises:
        UnknownNameError: an unknown kind. RetrievalError: a level outside its range.
    """
    return CORRUPTIONS.create(kind, {"level": level}, x, gen)


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """One (3, H, W) image through a JPEG encode and decode at `quality`."""
    arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    back = np.asarray(Image.open(buf).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(back.copy()).permute(2, 0, 1).to(img.device, img.dtype) / 255.0


def random_corruption(x: torch.Tensor, settings: CorruptionSettings, gen: torch.Generator) -> torch.Tensor:
    """Each image of the batch corrupted by one kind drawn among those on, at a random level."""
    kinds = settings.enabled()
    out = []
    for img in x:
        kind, lo, hi = kinds[int(torch.randint(len(kinds), (1,), generator=gen))]
        level = lo + (hi - lo) * float(torch.rand((), generator=gen))
        out.append(corrupt(img[None], kind, level, gen)[0])
    return torch.stack(out)


def corrupt_image(img: Image.Image, kind: str, level: float, seed: int = 0) -> Image.Image:
    """A corrupted copy of an RGB image, at its own resolution (benchmarks' noisy queries)."""
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)[None] / 255.0
    y = corrupt(x, kind, level, torch.Generator().manual_seed(seed))
    return Image.fromarray((y[0] * 255).round().byte().permute(1, 2, 0).numpy())
