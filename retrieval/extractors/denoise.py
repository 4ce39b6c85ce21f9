"""Cleaning images with a trained denoising autoencoder before they are embedded.

Denoising happens on the device, on the same uint8 canvases the extractor receives, so
it slots into indexing and querying without another pass over the files. The vectors
it leads to are the extractor's own (same manifest): an index built from clean photos
can be queried with denoised noisy ones, which is the point.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..images.preprocess import Preprocessor
from .autoencoder import load_autoencoder
from .base import Extractor
from ..options import autocast, resolve_device, resolve_precision

__all__ = ["Denoiser", "DenoisingExtractor"]

class Denoiser:
    """A denoising autoencoder checkpoint, loaded once, applied to canvases."""

    def __init__(self, path: str | os.PathLike[str], device: str | torch.device = "cpu",
                 precision: str = "auto") -> None:
        model, _ = load_autoencoder(path)
        self.path = str(path)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device)

    @torch.inference_mode()
    def clean(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 canvases -> cleaned uint8 canvases, on the denoiser's device."""
        x = pixels.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with autocast(self.device, self.precision):
            y = self.model(x)
        return (y.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class DenoisingExtractor(Extractor):
    """Another extractor, with every canvas cleaned by a :class:`Denoiser` first."""

    def __init__(self, inner: Extractor, denoiser: Denoiser) -> None:
        self.inner = inner
        self.denoiser = denoiser
        self.manifest = inner.manifest
        self.device = inner.device

    @property
    def preprocessor(self) -> Preprocessor:
        return self.inner.preprocessor

    def embed(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
        return self.inner.embed(self.denoiser.clean(pixels), heights, widths)
