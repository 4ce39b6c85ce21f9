"""Extractors whose network comes from a ``retrieve train`` checkpoint.

A checkpoint path stands for an extractor anywhere a backbone name does: its config
becomes an :class:`ExtractorConfig` whose ``kind`` picks the class (triplet or
autoencoder) and whose ``weights`` is the checkpoint folder. The manifest's weights
digest covers the whole trained network, so an index knows which training run made
its vectors, and a moved checkpoint (same digest) still fits.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import RetrievalError
from .checkpoint import checkpoint_dir, load_model, read_config
from .backbones import weights_digest
from .config import ExtractorConfig, Manifest
from ..options import resolve_device
from .bottleneck import BottleneckExtractor, DescriptorNet
from ..options import resolve_precision

__all__ = ["Built", "TrainedExtractor", "trained_config"]


@dataclass
class Built:
    """A trained network, weights loaded, and what feeding it takes."""

    net: DescriptorNet
    dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


def trained_config(path: str | os.PathLike[str]) -> ExtractorConfig:
    """The extractor config of the checkpoint at `path` (its folder or one of its files).

    Raises:
        RetrievalError: no readable checkpoint there.
    """
    saved = read_config(path)
    return ExtractorConfig.from_dict({**saved["extractor"], "kind": saved["kind"],
                                      "weights": str(checkpoint_dir(path).resolve())})


class TrainedExtractor(BottleneckExtractor):
    """Base of checkpoint-backed extractors: only how the network is built differs.

    It reuses :meth:`BottleneckExtractor.embed` (device transfer, autocast, forward) but
    not its constructor, which builds a pretrained trunk from a backbone name; here the
    whole network, trained parts included, comes from the checkpoint.
    """

    kind: ClassVar[str]

    def __init__(self, config: ExtractorConfig, device: str | torch.device = "cpu",
                 precision: str = "auto") -> None:
        if config.weights is None:
            raise RetrievalError(f"a {self.kind} extractor needs the path of its checkpoint (weights)")
        state, saved = load_model(config.weights)
        if saved.get("kind") != self.kind:
            raise RetrievalError(f"{config.weights} holds a {saved.get('kind')} checkpoint, not a {self.kind} one")
        built = self.build(state, saved, config)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.manifest = Manifest(config=config, dim=built.dim, weights_digest=weights_digest(built.net),
                                 mean=built.mean, std=built.std, interpolation=built.interpolation)
        self.weights_source = str(checkpoint_dir(config.weights))
        self._place(built.net)

    @classmethod
    @abc.abstractmethod
    def build(cls, state: dict[str, torch.Tensor], saved: dict[str, Any], config: ExtractorConfig) -> Built:
        """The network described by the checkpoint config `saved`, with `state` loaded."""
