"""ONNX Runtime's CPU execution provider as a :class:`~.session.Session`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import RuntimeUnsupportedError

__all__ = ["OnnxRuntimeSession", "version"]


def version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


class OnnxRuntimeSession:
    """One loaded graph. Intra-op threads as given; one inter-op thread and sequential
    execution, since these graphs are one chain of convolutions with nothing to run beside it."""

    def __init__(self, path: Path, threads: int, precision: str = "fp32") -> None:
        import onnxruntime as ort

        if precision != "fp32":
            raise RuntimeUnsupportedError(f"runtime onnx runs float32 only (asked: {precision}); "
                                          "bf16 runs in --runtime openvino or torch")

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run(None, dict(inputs))[0])
