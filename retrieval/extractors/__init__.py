"""Extractors turn images into vectors. ``create_extractor`` builds one from its config;
``resolve_extractor`` turns a backbone name or a trained checkpoint's path into that config.

What identifies an extractor (:class:`ExtractorConfig`, :class:`Manifest`) imports no
torch, so opening a bundle and reading its catalog stays fast; the torch parts
(:class:`Extractor`, the backbones, the families registered in :data:`EXTRACTORS`) are
imported on first use (PEP 562) or when a model is built.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UnknownNameError
from ..options import resolve_device
from ..registry import Registry
from .config import DEFAULT_BACKBONE, ExtractorConfig, Manifest
from .pooling import POOLINGS

if TYPE_CHECKING:
    import torch

    from .backbones import list_backbones
    from .base import Extractor

__all__ = [
    "DEFAULT_BACKBONE", "EXTRACTORS", "Extractor", "ExtractorConfig", "Manifest",
    "create_extractor", "list_backbones", "POOLINGS", "resolve_device", "resolve_extractor",
]

_LAZY = {"Extractor": ".base", "list_backbones": ".backbones"}

EXTRACTORS: Registry[Extractor] = Registry("extractor kind")
EXTRACTORS.add("bottleneck", f"{__name__}.bottleneck:BottleneckExtractor", help="a pretrained trunk and a pooling")
EXTRACTORS.add("triplet", f"{__name__}.triplet:TripletExtractor", help="a `retrieve train triplet` checkpoint")
EXTRACTORS.add("autoencoder", f"{__name__}.autoencoder:AutoencoderExtractor",
               help="a `retrieve train autoencoder` checkpoint's code")


def create_extractor(config: ExtractorConfig, device: str | torch.device = "cpu",
                     precision: str = "auto") -> Extractor:
    """Build the extractor a config describes (loads weights: call once, keep it warm).

    Args:
        precision: auto (bf16/fp16 on a GPU, fp32 on the CPU), fp32, bf16 or fp16.
    """
    return EXTRACTORS.entry(config.kind).factory(config, device, precision)


def resolve_extractor(spec: str | os.PathLike[str]) -> ExtractorConfig:
    """The config for a backbone name (off the shelf, defaults otherwise) or a checkpoint path.

    Raises:
        UnknownNameError: `spec` is neither a backbone name nor an existing path.
        RetrievalError: the path holds no readable checkpoint.
    """
    from .backbones import BACKBONES, list_backbones
    from .trained import trained_config

    if isinstance(spec, str) and spec in BACKBONES:
        return ExtractorConfig(backbone=spec)
    if str(spec).strip() and Path(spec).expanduser().exists():  # "" would be the current folder
        return trained_config(Path(spec).expanduser())
    raise UnknownNameError(f"extractor {str(spec)!r} is neither a backbone ({', '.join(list_backbones())}) "
                           "nor the path of a trained checkpoint")


def __getattr__(name: str) -> Any:
    """The torch parts, imported on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
