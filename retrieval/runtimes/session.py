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
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..extractors.base import Extractor
from ..extractors.config import Manifest
from .errors import RuntimeUnavailableError

if TYPE_CHECKING:
    import torch

__all__ = ["RUNTIMES", "GraphExtractor", "Runtime", "Session", "installed", "open_session", "runtime_version"]


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
        self.runtime = runtime
        self.session = session
        self.graph = graph

    @property
    def device(self) -> torch.device:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The CPU; a property, so that a query run by the graph never imports PyTorch."""
        import torch

        return torch.device("cpu")

    def embed(self, pixels: Any, heights: Any, widths: Any) -> np.ndarray:
        """Host arrays or CPU tensors in (both convert to numpy without a copy)."""
        out = self.session.run({"pixels": np.ascontiguousarray(pixels, dtype=np.uint8),
                                "heights": np.asarray(heights, dtype=np.int64),
                                "widths": np.asarray(widths, dtype=np.int64)})
        return out.astype(np.float32, copy=False)

    def batch_inputs(self, pixels: np.ndarray, heights: np.ndarray, widths: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return pixels, heights, widths
