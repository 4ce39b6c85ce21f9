"""A denoiser whose cleaning runs in an exported graph, beside a graph-run extractor.

Apart from :mod:`.session` because it is a PyTorch :class:`Denoiser` (the model it was
exported from is kept): importing it loads PyTorch, which a plain graph-run query does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..extractors.denoise import Denoiser
from .session import Session

__all__ = ["GraphDenoiser"]


class GraphDenoiser(Denoiser):
    """A :class:`Denoiser` whose cleaning runs in an exported graph (the PyTorch model is
    kept: it is what the graph was exported from)."""

    def __init__(self, denoiser: Denoiser, runtime: str, session: Session, graph: Path) -> None:
        # Not Denoiser.__init__: the checkpoint is loaded already, in `denoiser`.
        self.path, self.model, self.precision = denoiser.path, denoiser.model, "fp32"
        self.device = torch.device("cpu")
        self.runtime = runtime
        self.session = session
        self.graph = graph

    def clean(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.session.run({"pixels": np.ascontiguousarray(pixels.cpu().numpy(), dtype=np.uint8)})
        return torch.from_numpy(out)
