"""OpenVINO's CPU plugin as a :class:`~.session.Session` (the ``openvino`` extra).

The precision is always asked for explicitly: on a CPU with AVX512-BF16 or AMX, OpenVINO's
default is bfloat16, whose vectors do not agree with PyTorch's to the cosine an index needs
(0.9967 measured on this project's machine); bfloat16 is a choice (``--precision bf16``)
recorded in the index's manifest, never a silent default, and only where the CPU runs it
natively (:func:`native_bf16`): elsewhere OpenVINO would emulate it, slower than float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["OpenVinoSession", "native_bf16", "version"]

_HINTS = {"fp32": "f32", "bf16": "bf16"}


def version() -> str:
    import openvino

    return str(openvino.__version__)


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bfloat16 natively here (AVX512-BF16 or AMX)."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoSession:
    """One graph compiled for the CPU, `threads` inference threads, tuned for latency
    (one request at a time: the engine calls it batch after batch)."""

    def __init__(self, path: Path, threads: int, precision: str = "fp32") -> None:
        import openvino

        core = openvino.Core()
        self.compiled = core.compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": _HINTS[precision], "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        result = self.request.infer(dict(inputs))
        return np.array(result[self.compiled.output(0)])
