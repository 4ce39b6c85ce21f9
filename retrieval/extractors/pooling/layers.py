"""The poolings' torch code: plain functions and thin ``nn.Module`` wrappers.

Registered by name (with their declared parameters) in :mod:`retrieval.extractors.pooling`;
build them with its ``create_pooling``. All take an optional validity mask so that the grey
padding of a letterboxed image does not dilute the descriptor: only feature cells that
cover real pixels are pooled.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["gem", "avg", "max_", "GeM", "AvgPool", "MaxPool", "valid_mask"]


def valid_mask(
    heights: torch.Tensor, widths: torch.Tensor, size: int, fh: int, fw: int
) -> torch.Tensor:
    """Mask of the feature cells that see real pixels of top-left-aligned images.

    Args:
        heights, widths: (N,) valid image sizes in pixels inside the `size` canvas.
        size: canvas side in pixels.
        fh, fw: feature map height and width.

    Returns:
        (N, 1, fh, fw) float mask of 0s and 1s.
    """
    rows = torch.ceil(heights.float() * fh / size).clamp(1, fh)  # (N,)
    cols = torch.ceil(widths.float() * fw / size).clamp(1, fw)
    r = torch.arange(fh, device=rows.device).view(1, fh, 1)
    c = torch.arange(fw, device=rows.device).view(1, 1, fw)
    mask = (r < rows.view(-1, 1, 1)) & (c < cols.view(-1, 1, 1))  # (N, fh, fw)
    return mask.unsqueeze(1).float()


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6,
        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Generalised mean: (mean x^p)^(1/p). p=1 is average pooling, p->inf max pooling.

    Args:
        x: (N, C, H, W) feature map.
        mask: optional (N, 1, H, W) mask of cells to pool.

    Returns:
        (N, C) descriptors.
    """
    xp = x.clamp(min=eps).pow(p)
    return _masked_mean(xp, mask).pow(1.0 / p)


def avg(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average pooling (SPoC) over the valid cells: (N, C, H, W) -> (N, C)."""
    return _masked_mean(x, mask)


def max_(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Max pooling (MAC) over the valid cells: (N, C, H, W) -> (N, C)."""
    if mask is not None:
        x = x.masked_fill(mask == 0, float("-inf"))
    return x.amax(dim=(-2, -1))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean(dim=(-2, -1))
    return (x * mask).sum(dim=(-2, -1)) / mask.sum(dim=(-2, -1)).clamp(min=1.0)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent (learnable matters for fine-tuning)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return gem(x, self.p, self.eps, mask)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class AvgPool(nn.Module):
    """Average pooling as a module."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return avg(x, mask)


class MaxPool(nn.Module):
    """Max pooling as a module."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return max_(x, mask)
