"""A trunk fine-tuned with triplet loss, plus a projection head: the network and its extractor.

The network is the off-the-shelf descriptor (trunk, GeM, L2) followed by a linear head
and a second L2 normalisation. The head starts as the PCA of training descriptors, a
whitening-like rotation that keeps the off-the-shelf ranking, so fine-tuning starts
from the default's quality instead of from a random projection.

The trunk is split into stages (stem, block groups, head convolution); the first
``frozen_stages`` stay as pretrained and run without gradients. Training can then
compute that frozen prefix once per image (see :meth:`TripletNet.prefix`) and update
only the rest (:meth:`TripletNet.suffix`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RetrievalError
from .backbones import Trunk, create_trunk
from .config import ExtractorConfig
from .bottleneck import DescriptorNet
from .pooling import create_pooling, stored_pooling_params, valid_mask
from .trained import Built, TrainedExtractor

__all__ = ["TripletNet", "TripletExtractor", "build_triplet_net", "trunk_stages"]


def trunk_stages(trunk: nn.Module) -> list[nn.Module]:
    """The trunk as a list of stages that, run in order, give its forward pass.

    timm EfficientNets split into stem, one stage per block group, and the head
    convolution (9 for Lite0); torchvision trunks are sequences already (ResNet: 8).

    Raises:
        RetrievalError: a trunk of another shape, which cannot be partly frozen.
    """
    model = getattr(trunk, "model", None)
    if model is not None and all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        return [nn.Sequential(model.conv_stem, model.bn1), *model.blocks, nn.Sequential(model.conv_head, model.bn2)]
    if isinstance(trunk, nn.Sequential):
        return list(trunk)
    raise RetrievalError(f"cannot split a {type(trunk).__name__} trunk into stages for fine-tuning")


class TripletNet(DescriptorNet):
    """uint8 canvases -> unit vectors of `dim` dimensions, through a partly frozen trunk."""

    def __init__(self, trunk: nn.Module, pooling: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 image_size: int, in_dim: int, dim: int, frozen_stages: int) -> None:
        super().__init__(trunk, pooling, mean, std, image_size)
        self.head = nn.Linear(in_dim, dim)
        # A plain list, not a ModuleList: the stages are views into `trunk`, whose
        # parameters must be registered (and saved) once, under their usual names.
        self.stages = trunk_stages(trunk)
        if not 0 <= frozen_stages <= len(self.stages):
            raise RetrievalError(f"frozen stages {frozen_stages} out of range: this trunk has {len(self.stages)} "
                                 f"stages (freezing all of them trains the head alone)")
        self.frozen_stages = frozen_stages
        for stage in self.stages[:frozen_stages]:
            stage.requires_grad_(False)

    def prefix(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> the frozen stages' output feature map (N, C, h, w)."""
        x = pixels.permute(0, 3, 1, 2).float() * self.scale + self.shift
        for stage in self.stages[: self.frozen_stages]:
            x = stage(x)
        return x

    def descriptor(self, x: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """Prefix output -> the descriptor before the head: remaining stages, pooling over
        the valid cells, L2 (what the off-the-shelf extractor returns)."""
        for stage in self.stages[self.frozen_stages:]:
            x = stage(x)
        mask = valid_mask(heights, widths, self.image_size, x.shape[-2], x.shape[-1])
        return F.normalize(self.pooling(x.float(), mask), dim=1)

    def suffix(self, x: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """Prefix output -> unit vectors: the part of the network that trains."""
        return F.normalize(self.head(self.descriptor(x, heights, widths)), dim=1)

    def forward(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(pixels), heights, widths)

    @torch.no_grad()
    def init_head(self, descriptors: torch.Tensor) -> None:
        """Start the head as the PCA of these (N, in_dim) unit descriptors: y = V^T (x - mean)."""
        dim = self.head.out_features
        if len(descriptors) < 2:
            raise RetrievalError("need at least 2 training images to start the projection head")
        mean = descriptors.mean(0)
        _, _, v = torch.linalg.svd(descriptors - mean, full_matrices=False)  # rows of v: principal axes
        k = min(dim, len(v))
        axes = torch.randn(descriptors.shape[1], dim, dtype=descriptors.dtype)
        axes[:, :k] = v[:k].T  # fewer images than dimensions: random axes complete the basis
        basis = torch.linalg.qr(axes)[0].T  # orthonormal rows, the first k the principal axes (up to sign)
        self.head.weight.copy_(basis)
        self.head.bias.copy_(-basis @ mean)


def build_triplet_net(model: dict[str, Any], image_size: int) -> tuple[TripletNet, Trunk]:
    """A TripletNet on the pretrained trunk named in `model` (a checkpoint's "model" section),
    and that trunk's facts (preprocessing constants).

    Keys: backbone, backbone_weights (file or None), pooling, pooling_params (or 0.1's gem_p), dim,
    frozen_stages.
    """
    trunk = create_trunk(model["backbone"], model.get("backbone_weights"))
    if not 1 <= model["dim"] <= trunk.dim:
        raise RetrievalError(f"head dimension {model['dim']} out of range (1 to {trunk.dim}, the trunk's)")
    net = TripletNet(trunk.module, create_pooling(model["pooling"], stored_pooling_params(model)), trunk.mean, trunk.std,
                     image_size, trunk.dim, model["dim"], model["frozen_stages"])
    return net, trunk


class TripletExtractor(TrainedExtractor):
    """Embeds with a triplet fine-tuned network (``retrieve train triplet``)."""

    kind = "triplet"

    @classmethod
    def build(cls, state: dict[str, torch.Tensor], saved: dict[str, Any], config: ExtractorConfig) -> Built:
        net, trunk = build_triplet_net(saved["model"], config.image_size)
        net.load_state_dict(state)
        return Built(net, net.head.out_features, trunk.mean, trunk.std, trunk.interpolation)
