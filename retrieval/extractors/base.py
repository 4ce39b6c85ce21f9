"""What every extractor is: a config that rebuilds it, a manifest that identifies it,
and the two steps of embedding (host-side preprocessing, device-side forward)."""

from __future__ import annotations

import abc
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import ExtractorMismatchError, RetrievalError, UnknownNameError
from ..images import Preprocessor

__all__ = ["ExtractorConfig", "Manifest", "Extractor", "resolve_device", "RESIZE_MODES", "PRECISIONS"]

RESIZE_MODES = ("letterbox", "squash")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractorConfig:
    """Everything needed to rebuild an extractor; stored with each index.

    Fields left at None take the extractor's defaults when it is built.
    """

    kind: str = "bottleneck"  # registry name of the extractor family
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = None  # local weights file; None: packaged or published weights
    pooling: str = "gem"  # gem | avg | max
    gem_p: float = 3.0
    image_size: int = 288  # canvas side in pixels (288 beat 224 and matched 320 on Caltech-101)
    resize: str = "letterbox"  # letterbox keeps the aspect ratio; squash is the classic baseline

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise UnknownNameError(f"unknown resize mode {self.resize!r}; choose {', '.join(RESIZE_MODES)}")
        if not 32 <= self.image_size <= 2048:
            raise RetrievalError(f"image size {self.image_size} out of range (32 to 2048)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractorConfig:
        """Rebuild from a stored dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Manifest:
    """How an index's vectors were made. Two extractors are compatible iff equal here."""

    config: ExtractorConfig
    dim: int
    weights_digest: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    normalisation: str = "l2"
    extra: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        """The fields that decide compatibility (a weights *path* does not; its digest does)."""
        d = self.to_dict()
        d["config"].pop("weights", None)
        return d

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Rebuild from a stored dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["config"] = ExtractorConfig.from_dict(d["config"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    def check_compatible(self, other: Manifest, what: str = "extractor") -> None:
        """Raise ExtractorMismatchError naming the first differing fields."""
        mine, theirs = _flatten(self.identity()), _flatten(other.identity())
        diffs = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if diffs:
            detail = "; ".join(f"{k}: index has {mine.get(k)!r}, {what} has {theirs.get(k)!r}" for k in diffs[:3])
            raise ExtractorMismatchError(
                f"the {what} differs from the one this index was built with ({detail}). "
                "Use the index's own extractor, or build a new index."
            )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when a GPU is visible, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RetrievalError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    return dev


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
        c = self.manifest.config
        return Preprocessor(c.image_size, c.resize, self.manifest.interpolation)

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
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
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
        pixels = torch.from_numpy(np.stack([p[0] for p in prepared]))
        hs = torch.tensor([p[1] for p in prepared])
        ws = torch.tensor([p[2] for p in prepared])
        return self.embed_adaptive(pixels, hs, ws)
