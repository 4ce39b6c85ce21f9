"""R-MAC with its region grid as constants, so that it fits in a graph without Python loops
over data.

:func:`~retrieval.extractors.pooling.regional.rmac` lays its regions over each image's box
of valid cells, found at run time, and groups images by box: control flow that a traced
graph would freeze at the example batch's boxes. The boxes are few, though: for a
top-left-aligned canvas (letterboxed or squashed) a box is the first `rows` x `cols`
cells, so a map of h x w cells has h * w possible boxes. :class:`FixedGridRMAC` lays the
grid of every box once, with the same :func:`rmac_regions`, as 0/1 masks; at run time
each image picks its box's masks by index, and the regions are pooled with the same
masked pooling functions as the global poolings. Only the layout of the computation
changes, not what is computed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..extractors.pooling.layers import gem, max_
from ..extractors.pooling.regional import RMAC, rmac_regions

__all__ = ["FixedGridRMAC"]


class FixedGridRMAC(nn.Module):
    """The same descriptor as an :class:`RMAC` module, for masks that cover the top-left
    `rows` x `cols` cells of the map (what :func:`valid_mask` makes)."""

    def __init__(self, rmac: RMAC) -> None:
        super().__init__()
        self.levels, self.p, self.eps = rmac.levels, rmac.p, rmac.eps
        self._grids: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def grids(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For each box (rows-1) * width + (cols-1): its region masks, padded to the largest
        region count, (boxes, regions, height, width), and which of them are real regions,
        (boxes, regions). A padding region covers its box (so its pool is finite) and
        weighs 0."""
        if (height, width) not in self._grids:
            boxes = [rmac_regions(rows, cols, self.levels) for rows in range(1, height + 1)
                     for cols in range(1, width + 1)]
            count = max(len(b) for b in boxes)
            # numpy, not torch: under the exporter's tracer every torch write here would
            # become a graph node; these arrays enter the graph as two constants.
            masks = np.zeros((len(boxes), count, height, width), np.float32)
            real = np.zeros((len(boxes), count), np.float32)
            for i, regions in enumerate(boxes):
                whole = regions[0]  # the box itself
                for j in range(count):
                    top, left, h, w = regions[j] if j < len(regions) else whole
                    masks[i, j, top:top + h, left:left + w] = 1.0
                real[i, :len(regions)] = 1.0
            self._grids[height, width] = torch.from_numpy(masks), torch.from_numpy(real)
        return self._grids[height, width]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        masks, real = self.grids(height, width)
        rows = (mask.amax(dim=-1)[:, 0] > 0).sum(-1)  # (N,) valid rows of each image
        cols = (mask.amax(dim=-2)[:, 0] > 0).sum(-1)
        box = (rows - 1) * width + (cols - 1)
        regions, weights = masks.to(x.device)[box], real.to(x.device)[box]  # (N, R, h, w), (N, R)
        out = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)
        for j in range(masks.shape[1]):
            region = regions[:, j:j + 1]
            pooled = max_(x, region) if self.p is None else gem(x, self.p, self.eps, region)
            out = out + weights[:, j:j + 1] * F.normalize(pooled, dim=-1, eps=self.eps)
        return out
