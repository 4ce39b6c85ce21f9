"""OpenVINO's CPU plugin as a :class:`~.session.Session` (the ``openvino`` extra).

Float32 is asked for explicitly: on a CPU with AVX512-BF16 or AMX, OpenVINO's default
is bfloat16, whose vectors do not agree with PyTorch's to the cosine an index needs
(0.9967 measured on this project's machine); a reduced precision has to be a choice
recorded in the index, never a silent default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["OpenVinoSession", "version"]


def version() -> str:
    import openvino

    return str(openvino.__version__)


class OpenVinoSession:
    """One graph compiled for the CPU, `threads` inference threads, tuned for latency
    (one request at a time: the engine calls it batch after batch)."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino

        core = openvino.Core()
        self.compiled = core.compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        result = self.request.infer(dict(inputs))
        return np.array(result[self.compiled.output(0)])
