"""Extractors and denoisers that run an exported graph instead of the PyTorch network.

They keep the PyTorch classes' contracts (``embed(pixels, heights, widths)`` on uint8
canvases; ``clean(pixels)``), so the indexing loop, the query path and evaluation use them
unchanged, and their manifest is the PyTorch extractor's: vectors from either fit the
same index. Which runtime executes the graph is a :class:`Session`, one small module each
(:mod:`.onnx_runtime`, :mod:`.openvino_runtime`), looked up by name in :data:`RUNTIMES`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..extractors.base import Extractor
from ..extractors.config import Manifest
from ..extractors.denoise import Denoiser
from .errors import RuntimeUnavailableError

__all__ = ["RUNTIMES", "GraphDenoiser", "GraphExtractor", "Runtime", "Session", "installed", "open_session",
           "runtime_version"]


class Session(Protocol):
    """A loaded graph: named numpy inputs in, its first output out."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class Runtime:
    """A runtime that executes ONNX graphs: the module that wraps it and the package it needs."""

    name: str
    module: str  # in this package: defines `version()` and a session class
    session: str
    package: str  # the import name that must be installed
    install: str  # what to tell a user who lacks it


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("onnx", ".onnx_runtime", "OnnxRuntimeSession", "onnxruntime", "pip install onnxruntime"),
    Runtime("openvino", ".openvino_runtime", "OpenVinoSession", "openvino", "pip install 'retrieve[openvino]'"),
)}


def installed(name: str) -> bool:
    """Whether runtime `name`'s package can be imported (without importing it)."""
    return importlib.util.find_spec(RUNTIMES[name].package) is not None


def runtime_version(name: str) -> str:
    """The installed version of runtime `name` (part of what makes a measurement stale)."""
    return str(importlib.import_module(RUNTIMES[name].module, __package__).version())


def open_session(name: str, path: Path, threads: int, precision: str = "fp32") -> Session:
    """Load the graph at `path` in runtime `name`, computing in `precision`.

    Raises:
        RuntimeUnavailableError: the runtime is not installed.
        Exception: whatever the runtime raises for a graph it cannot load (the caller
            exports the graph again once).
    """
    runtime = RUNTIMES[name]
    if not installed(name):
        raise RuntimeUnavailableError(f"runtime {name} is not installed ({runtime.install}), "
                                      "or use --runtime torch")
    return getattr(importlib.import_module(runtime.module, __package__), runtime.session)(path, threads, precision)


class GraphExtractor(Extractor):
    """Embeds with an exported descriptor graph; same manifest, same vectors (to float32
    rounding) as the PyTorch extractor it was exported from."""

    def __init__(self, manifest: Manifest, runtime: str, session: Session, graph: Path) -> None:
        self.manifest = manifest
        self.device = torch.device("cpu")
        self.runtime = runtime
        self.session = session
        self.graph = graph

    def embed(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
        out = self.session.run({"pixels": np.ascontiguousarray(pixels.cpu().numpy(), dtype=np.uint8),
                                "heights": heights.cpu().numpy().astype(np.int64),
                                "widths": widths.cpu().numpy().astype(np.int64)})
        return out.astype(np.float32, copy=False)


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
