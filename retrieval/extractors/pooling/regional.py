"""R-MAC: regional maximum activations of convolutions (Tolias, Sicre and Jégou, ICLR 2016).

A global max (or GeM) pool answers "is this pattern anywhere in the image?", so a small
object in clutter is drowned by the rest of the scene. R-MAC pools square regions at
`levels` scales laid over the map with about 40% overlap, L2-normalises each region's
vector so that every region votes equally, and sums them: an object that fills one region
weighs as much in the descriptor as the whole scene does. The grid is cirtorch's
(``cirtorch.layers.functional.rmac``): the whole map, then at level l squares of side
2 min(H, W) / (l + 1), l + k of them along the long side, k chosen for the overlap nearest
40%. The final L2 normalisation is the descriptor network's, as for every pooling.

Regions are laid over the valid cells only (the bounding box of the mask), so the grey
padding of a letterboxed image neither takes part in a region nor moves the grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import gem

__all__ = ["RMAC", "rmac", "rmac_regions"]

OVERLAP = 0.4  # wanted overlap of neighbouring regions at the coarsest level
STEPS = (2, 3, 4, 5, 6, 7)  # candidate region counts along the long side at the coarsest level

Region = tuple[int, int, int, int]  # top, left, height, width, in feature cells


def rmac_regions(height: int, width: int, levels: int) -> list[Region]:
    """The regions R-MAC pools on a `height` x `width` map: the whole map first, then the
    squares of each level, row by row.

    Square maps get 1, 4, 9, ... squares (l x l at level l); on an oblong map the long
    side gets extra squares so that neighbours overlap by about 40%. Levels whose squares
    would be smaller than one cell are skipped.
    """
    side = min(height, width)
    extra_h = extra_w = 0
    if height != width:
        def overlap_error(steps: int) -> float:
            shift = (max(height, width) - side) / (steps - 1)
            return abs((side**2 - side * shift) / side**2 - OVERLAP)

        extra = min(range(len(STEPS)), key=lambda i: overlap_error(STEPS[i])) + 1
        extra_h, extra_w = (extra, 0) if height > width else (0, extra)
    regions: list[Region] = [(0, 0, height, width)]
    for level in range(1, levels + 1):
        size = math.floor(2 * side / (level + 1))
        if size == 0:
            continue
        tops = _starts(height, size, level + extra_h)
        lefts = _starts(width, size, level + extra_w)
        regions += [(top, left, size, size) for top in tops for left in lefts]
    return regions


def _starts(length: int, size: int, count: int) -> list[int]:
    """`count` start offsets of `size`-cell windows spread evenly over `length` cells
    (cirtorch's rounding: the window centres are floored)."""
    half = math.floor(size / 2 - 1)
    step = 0.0 if count == 1 else (length - size) / (count - 1)
    return [math.floor(half + i * step) - half for i in range(count)]


def rmac(x: torch.Tensor, levels: int = 3, p: float | None = None, mask: torch.Tensor | None = None,
         eps: float = 1e-6) -> torch.Tensor:
    """R-MAC over each image's valid cells: (N, C, H, W) -> (N, C), not yet L2-normalised.

    Args:
        levels: region scales (cirtorch's L).
        p: pool each region with GeM of this exponent instead of max.
        mask: optional (N, 1, H, W) mask of valid cells; regions cover its bounding box.
    """
    boxes = _valid_boxes(x, mask)
    out = x.new_empty(x.shape[:2])
    # Images with the same valid box share one region grid: pool them together.
    for box in sorted(set(boxes)):
        rows = torch.tensor([i for i, b in enumerate(boxes) if b == box], device=x.device)
        top, left, height, width = box
        valid = x[rows, :, top:top + height, left:left + width]
        pooled = [_pool(valid[..., t:t + h, l:l + w], p, eps) for t, l, h, w in rmac_regions(height, width, levels)]
        out[rows] = F.normalize(torch.stack(pooled), dim=-1, eps=eps).sum(0)
    return out


def _pool(region: torch.Tensor, p: float | None, eps: float) -> torch.Tensor:
    return region.amax(dim=(-2, -1)) if p is None else gem(region, p, eps)


def _valid_boxes(x: torch.Tensor, mask: torch.Tensor | None) -> list[Region]:
    """Each image's bounding box of valid cells (the whole map without a mask, or for an
    image whose mask is empty)."""
    n, _, height, width = x.shape
    if mask is None:
        return [(0, 0, height, width)] * n
    rows = (mask.amax(dim=-1)[:, 0] > 0).cpu()  # (N, H): rows holding a valid cell
    cols = (mask.amax(dim=-2)[:, 0] > 0).cpu()  # (N, W)
    boxes = []
    for r, c in zip(rows, cols):
        if not r.any():
            boxes.append((0, 0, height, width))
            continue
        r_idx, c_idx = r.nonzero()[:, 0], c.nonzero()[:, 0]
        top, left = int(r_idx[0]), int(c_idx[0])
        boxes.append((top, left, int(r_idx[-1]) - top + 1, int(c_idx[-1]) - left + 1))
    return boxes


class RMAC(nn.Module):
    """R-MAC as a module (no learnable parameters: `p`, when given, is fixed)."""

    def __init__(self, levels: int = 3, p: float | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        self.levels, self.p, self.eps = levels, p, eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return rmac(x, self.levels, self.p, mask, self.eps)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, p={self.p}"
