"""A convolutional denoising autoencoder, and the extractor that embeds with its code.

The network follows RED-Net (Mao et al., 2016, "Image restoration using convolutional
auto-encoders with symmetric skip connections"): stride-2 convolutions down to a code
at 1/2^levels of the resolution, transposed convolutions back up, the encoder's maps
added into the decoder at each scale, and the output added to the input. Without the
skips the code would have to carry every pixel's detail and the output would come
back blurred; without the global residual the network would spend itself relearning
the identity. The code at the bottom is still what the encoder makes of the image,
and :class:`AutoencoderExtractor` pools it into a descriptor.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RetrievalError
from .checkpoint import load_model
from .config import ExtractorConfig
from .bottleneck import DescriptorNet
from .pooling import create_pooling
from .trained import Built, TrainedExtractor

__all__ = ["DenoisingAutoencoder", "AutoencoderExtractor", "load_autoencoder"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU(inplace=True))


class DenoisingAutoencoder(nn.Module):
    """(N, 3, H, W) images in [0, 1] -> the same images cleaned (any H and W).

    Args:
        width: channels of the first level; each level down doubles them.
        levels: stride-2 stages; the code has width * 2^(levels-1) channels.
    """

    def __init__(self, width: int = 16, levels: int = 3) -> None:
        super().__init__()
        if not (1 <= levels <= 6 and 4 <= width <= 256):
            raise RetrievalError(f"autoencoder width {width} / levels {levels} out of range (4-256, 1-6)")
        chans = [width * 2**i for i in range(levels)]
        # calling the encoder alone gives the code: (N, chans[-1], H / 2^levels, W / 2^levels)
        self.encoder = nn.Sequential(
            _conv(3, width),  # full resolution: the per-pixel detail that noise lives in
            *[nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout)) for cin, cout in zip([width, *chans[:-1]], chans)])
        outs = [*chans[-2::-1], width]  # decoder channels per level, ending at full resolution
        self.ups = nn.ModuleList(nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, 2), nn.ReLU(inplace=True))
                                 for cin, cout in zip(chans[::-1], outs))
        self.fuse = nn.ModuleList(_conv(c, c) for c in outs[:-1])  # after each skip is added, below full size
        self.out = nn.Conv2d(width, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity: clean images pass unharmed
        assert self.out.bias is not None  # Conv2d's default bias=True
        nn.init.zeros_(self.out.bias)
        self.width, self.levels = width, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.levels
        padded = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
        skips = []
        y = padded - 0.5  # centred input trains faster; the extractor feeds the encoder the same way
        for stage in self.encoder:
            y = stage(y)
            skips.append(y)
        for i, up in enumerate(self.ups):
            y = up(y) + skips[-2 - i]
            if i < len(self.fuse):
                y = self.fuse[i](y)
        return (padded + self.out(y))[..., :h, :w]


def load_autoencoder(path: str | os.PathLike[str]) -> tuple[DenoisingAutoencoder, dict[str, Any]]:
    """The trained autoencoder of a checkpoint (CPU, eval mode) and its config.

    Raises:
        RetrievalError: no checkpoint there, or one of another kind.
    """
    state, saved = load_model(path)
    if saved.get("kind") != AutoencoderExtractor.kind:
        raise RetrievalError(f"{path} holds a {saved.get('kind')} checkpoint, not a denoising autoencoder")
    return _restore(state, saved).eval(), saved


def _restore(state: dict[str, torch.Tensor], saved: dict[str, Any]) -> DenoisingAutoencoder:
    model = DenoisingAutoencoder(saved["model"]["width"], saved["model"]["levels"])
    model.load_state_dict(state)
    return model


class AutoencoderExtractor(TrainedExtractor):
    """Embeds with the autoencoder's code: GeM over the valid cells, then L2.

    Pixels go in as the autoencoder's encoder sees them: 0-to-1, minus 0.5 (mean 0.5, std 1).
    """

    kind = "autoencoder"

    @classmethod
    def build(cls, state: dict[str, torch.Tensor], saved: dict[str, Any], config: ExtractorConfig) -> Built:
        model = _restore(state, saved)
        mean, std = (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)
        net = DescriptorNet(model.encoder, create_pooling(config.pooling, config.pooling_params), mean, std,
                            config.image_size)
        return Built(net, model.width * 2 ** (model.levels - 1), mean, std, saved["extractor"]["interpolation"])
