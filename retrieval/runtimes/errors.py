"""What can go wrong when a model leaves PyTorch: each a one-line RetrievalError."""

from __future__ import annotations

from ..errors import RetrievalError

__all__ = ["ExportFailedError", "RuntimeUnavailableError", "RuntimeUnsupportedError"]


class RuntimeUnavailableError(RetrievalError):
    """The runtime asked for is not installed (OpenVINO is an extra)."""


class RuntimeUnsupportedError(RetrievalError):
    """The runtime cannot run this way: another device, or a precision other than float32."""


class ExportFailedError(RetrievalError):
    """The network could not be written as an ONNX graph."""
