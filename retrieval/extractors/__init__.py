"""Extractors turn images into vectors. ``create_extractor`` builds one from its config;
``resolve_extractor`` turns a backbone name or a trained checkpoint's path into that config."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import UnknownNameError
from .autoencoder import AutoencoderExtractor
from .backbones import BACKBONES, DEFAULT_BACKBONE, list_backbones
from .base import Extractor, ExtractorConfig, Manifest, resolve_device
from .bottleneck import BottleneckExtractor
from .pooling import POOLINGS
from .trained import trained_config
from .triplet import TripletExtractor

__all__ = [
    "DEFAULT_BACKBONE", "EXTRACTORS", "Extractor", "ExtractorConfig", "Manifest",
    "create_extractor", "list_backbones", "POOLINGS", "resolve_device", "resolve_extractor",
]

EXTRACTORS: dict[str, Callable[..., Extractor]] = {
    "bottleneck": BottleneckExtractor,
    "triplet": TripletExtractor,  # `retrieve train triplet` checkpoints
    "autoencoder": AutoencoderExtractor,  # `retrieve train autoencoder` checkpoints
}


def create_extractor(config: ExtractorConfig, device: str | torch.device = "cpu",
                     precision: str = "auto") -> Extractor:
    """Build the extractor a config describes (loads weights: call once, keep it warm).

    Args:
        precision: auto (bf16/fp16 on a GPU, fp32 on the CPU), fp32, bf16 or fp16.
    """
    if config.kind not in EXTRACTORS:
        raise UnknownNameError(f"unknown extractor kind {config.kind!r}; choose {', '.join(EXTRACTORS)}")
    return EXTRACTORS[config.kind](config, device, precision)


def resolve_extractor(spec: str | os.PathLike[str]) -> ExtractorConfig:
    """The config for a backbone name (off the shelf, defaults otherwise) or a checkpoint path.

    Raises:
        UnknownNameError: `spec` is neither a backbone name nor an existing path.
        RetrievalError: the path holds no readable checkpoint.
    """
    if isinstance(spec, str) and spec in BACKBONES:
        return ExtractorConfig(backbone=spec)
    if str(spec).strip() and Path(spec).expanduser().exists():  # "" would be the current folder
        return trained_config(Path(spec).expanduser())
    raise UnknownNameError(f"extractor {str(spec)!r} is neither a backbone ({', '.join(list_backbones())}) "
                           "nor the path of a trained checkpoint")
