"""Extractors turn images into vectors. ``create_extractor`` builds one from its config."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UnknownNameError
from .backbones import DEFAULT_BACKBONE, list_backbones
from .base import Extractor, ExtractorConfig, Manifest, resolve_device
from .bottleneck import BottleneckExtractor
from .pooling import POOLINGS

__all__ = [
    "DEFAULT_BACKBONE", "EXTRACTORS", "Extractor", "ExtractorConfig", "Manifest",
    "create_extractor", "list_backbones", "POOLINGS", "resolve_device",
]

EXTRACTORS: dict[str, Callable[..., Extractor]] = {
    "bottleneck": BottleneckExtractor,
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
