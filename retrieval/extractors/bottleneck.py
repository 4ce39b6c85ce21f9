"""Off-the-shelf CNN descriptors: a pretrained trunk, global pooling, L2 normalisation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import create_trunk
from ..options import resolve_device
from .base import Extractor
from .config import ExtractorConfig, Manifest
from .cuda_graphs import GraphedForward
from ..options import autocast, resolve_precision
from .pooling import create_pooling, valid_mask
from .pooling.multiscale import embed_scales

__all__ = ["BottleneckExtractor", "DescriptorNet"]


class DescriptorNet(nn.Module):
    """uint8 canvases -> unit vectors, entirely on the device.

    Kept as one module so that a fine-tuned variant (issue: triplet head) can subclass it
    and so the whole forward can be compiled or exported as a unit.
    """

    scale: torch.Tensor  # buffers, registered below
    shift: torch.Tensor

    def __init__(self, trunk: nn.Module, pooling: nn.Module, mean: tuple[float, ...],
                 std: tuple[float, ...], image_size: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.pooling = pooling
        self.image_size = image_size
        # Folded so that x_uint8 * scale + shift == ((x / 255) - mean) / std.
        std_t = torch.tensor(std).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -torch.tensor(mean).view(1, 3, 1, 1) / std_t, persistent=False)

    def forward(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        # pixels: (N, H, W, 3) uint8 -> (N, 3, H, W) float, channels_last in memory for free
        x = pixels.permute(0, 3, 1, 2).float() * self.scale + self.shift
        fmap = self.trunk(x)  # (N, C, h, w)
        mask = valid_mask(heights, widths, self.image_size, fmap.shape[-2], fmap.shape[-1])
        desc = self.pooling(fmap.float(), mask)  # (N, C)
        return F.normalize(desc, dim=1)


class BottleneckExtractor(Extractor):
    """Pooled penultimate activations of a pretrained backbone.

    On a GPU the trunk runs channels_last under bf16 autocast by default (`precision`);
    pooling and normalisation stay in float32. On the CPU everything is float32. With
    several `scales` in the config, :meth:`embed` runs the network once per scale and
    merges the descriptors (:mod:`.pooling.multiscale`); the trained extractors inherit it.
    """

    def __init__(self, config: ExtractorConfig, device: str | torch.device = "cpu",
                 precision: str = "auto") -> None:
        trunk = create_trunk(config.backbone, config.weights)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.manifest = Manifest(
            config=config, dim=trunk.dim, weights_digest=trunk.weights_digest,
            mean=trunk.mean, std=trunk.std, interpolation=trunk.interpolation,
        )
        self.weights_source = trunk.weights_source
        self._place(DescriptorNet(trunk.module, create_pooling(config.pooling, config.pooling_params),
                                  trunk.mean, trunk.std, config.image_size))

    def _place(self, net: nn.Module) -> None:
        """Put `net` on the device for inference: eval mode, channels_last on a GPU."""
        self.net = net.to(self.device).eval()
        if self.device.type == "cuda":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.graphs = GraphedForward(self._forward, self.device)  # off unless enabled (see .cuda_graphs)

    @property
    def scale_exponent(self) -> float:
        """The power mean that merges scales: GeM's exponent when the descriptor is GeM
        pooled and nothing else (non-negative, as cirtorch's extract_ms assumes), else 1,
        a plain sum, which suits descriptors that a trained head or R-MAC's region sum made."""
        c = self.manifest.config
        return float(c.pooling_params["p"]) if c.kind == "bottleneck" and c.pooling == "gem" else 1.0

    @torch.inference_mode()
    def embed(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
        non_blocking = self.device.type == "cuda"  # the loader pins host memory on CUDA
        pixels = pixels.to(self.device, non_blocking=non_blocking)
        heights, widths = heights.to(self.device), widths.to(self.device)
        out = self._forward(pixels, heights, widths) if self.net.training else self.graphs(pixels, heights, widths)
        return out.float().cpu().numpy()

    def _forward(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """The whole descriptor on device tensors: what a CUDA graph captures."""
        with autocast(self.device, self.precision):
            return embed_scales(self.net, pixels, heights, widths, self.manifest.config.scales, self.scale_exponent)
