"""Multi-scale embedding: one descriptor from the same canvas seen at several sizes.

A CNN's cells have a fixed receptive field, so an object that fills a query photo but
a corner of its reference is matched by cells of different reach. Embedding the image
at a few scales and merging the descriptors (Radenović, Tolias and Chum, TPAMI 2019;
cirtorch's ``extract_ms``) makes the descriptor less sensitive to that. The canvas is
rescaled on the device, after preprocessing, so decoding and the host-to-device copy
stay those of one scale; the valid region keeps its fraction of the canvas, so each
network's validity mask still fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["combine_scales", "embed_scales", "rescale_canvas"]

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rescale_canvas(pixels: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, H, W, 3) canvases (uint8 or 0-255 float) -> (N, round(sH), round(sW), 3) float.

    Bilinear, antialiased when shrinking (as a smaller photo would look, not aliased).
    """
    x = pixels.permute(0, 3, 1, 2).float()
    size = (max(1, round(int(x.shape[-2]) * scale)), max(1, round(int(x.shape[-1]) * scale)))  # int(): traced shapes
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return x.permute(0, 2, 3, 1)


def combine_scales(descriptors: Sequence[torch.Tensor], p: float = 1.0) -> torch.Tensor:
    """Unit descriptors of the same images at several scales -> one unit descriptor each.

    The power mean (mean of d^p)^(1/p), then L2: with p = 1 the plain sum of the unit
    vectors; with the GeM exponent (cirtorch's choice for GeM networks) the strongest
    response of each dimension over the scales counts most. p > 1 needs non-negative
    descriptors, which GeM pooling guarantees.
    """
    stacked = torch.stack([d.float() for d in descriptors])  # (S, N, D)
    merged = stacked.mean(0) if p == 1 else stacked.clamp(min=0).pow(p).mean(0).pow(1.0 / p)
    return F.normalize(merged, dim=1)


def embed_scales(forward: Forward, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor,
                 scales: Sequence[float], p: float = 1.0) -> torch.Tensor:
    """`forward` (canvases, valid heights, valid widths -> unit descriptors) at each scale,
    combined by :func:`combine_scales`.

    At the single scale 1 this is exactly ``forward(pixels, heights, widths)``. Valid sizes
    are passed unscaled: networks compare them with their nominal canvas size, and the
    valid fraction of the canvas is the same at every scale.
    """
    if len(scales) == 1 and scales[0] == 1.0:
        return forward(pixels, heights, widths)
    outs = [forward(pixels if s == 1.0 else rescale_canvas(pixels, s), heights, widths) for s in scales]
    return outs[0] if len(outs) == 1 else combine_scales(outs, p)
