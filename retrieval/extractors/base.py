"""What every extractor is: a manifest that identifies it (:mod:`.config`) and the two
steps of embedding (host-side preprocessing, device-side forward).

Importing this module does not import PyTorch: an extractor that runs an exported graph
(:mod:`retrieval.runtimes`) answers a query without it, and PyTorch's import is most of a
cold `retrieve query`.
"""

from __future__ import annotations

import abc
import logging
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import RetrievalError
from ..images.preprocess import Preprocessor
from .config import Manifest

if TYPE_CHECKING:
    import torch

__all__ = ["Extractor"]

log = logging.getLogger(__name__)


class Extractor(abc.ABC):
    """Turns images into L2-normalised vectors.

    Preprocessing (host, in decode workers) yields a uint8 canvas and its valid size;
    :meth:`embed` moves uint8 to the device and does normalisation there, so the
    host-to-device copy is 4x smaller than float32.
    """

    manifest: Manifest
    device: torch.device

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def preprocessor(self) -> Preprocessor:
        """The host-side step, picklable so decode workers can run it."""
        return self.manifest.preprocessor()

    @abc.abstractmethod
    def embed(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
        """(N, H, W, 3) uint8 canvases and valid sizes -> (N, dim) float32 unit vectors."""

    # Largest batch known to fit on the device; shrinks after an out-of-memory error.
    max_batch: int | None = None

    def embed_adaptive(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
        """:meth:`embed`, splitting the batch whenever the device runs out of memory.

        The smaller size is remembered, so later batches go straight to it; a single
        image that does not fit is an error.
        """
        n = len(pixels)
        step = min(n, self.max_batch or n)
        out, start = [], 0
        while start < n:
            end = min(n, start + step)
            try:
                out.append(self.embed(pixels[start:end], heights[start:end], widths[start:end]))
                start = end
            except _device_out_of_memory():
                if self.device.type == "cuda":
                    sys.modules["torch"].cuda.empty_cache()
                if step == 1:
                    raise RetrievalError(f"out of {self.device.type} memory even for one image; "
                                         "lower --image-size or use --device cpu") from None
                step = max(1, step // 2)
                self.max_batch = step
                log.warning("out of %s memory: batch size lowered to %d", self.device.type, step)
        return np.concatenate(out) if out else np.empty((0, self.dim), np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Convenience for a few in-memory images (queries): preprocess and embed."""
        prepared = [self.preprocessor(im) for im in images]
        return self.embed_adaptive(*self.batch_inputs(np.stack([p[0] for p in prepared]),
                                                      np.array([p[1] for p in prepared], np.int64),
                                                      np.array([p[2] for p in prepared], np.int64)))

    def batch_inputs(self, pixels: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> tuple[Any, Any, Any]:
        """What :meth:`embed` takes, from host arrays: PyTorch tensors (an extractor that
        runs without PyTorch takes the arrays as they are)."""
        import torch

        return torch.from_numpy(pixels), torch.from_numpy(heights), torch.from_numpy(widths)


def _device_out_of_memory() -> tuple[type[BaseException], ...]:
    """What an out-of-memory error of the device is: PyTorch's, once PyTorch is loaded
    (before that, nothing that could raise it has run)."""
    torch = sys.modules.get("torch")
    return (torch.OutOfMemoryError,) if torch is not None else ()
