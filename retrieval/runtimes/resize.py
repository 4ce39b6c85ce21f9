"""Antialiased bilinear resizing in an ONNX graph, exactly as PyTorch does it.

Multi-scale embedding shrinks canvases with ``F.interpolate(..., antialias=True)``, which
the TorchScript exporter has no symbolic for. ONNX's own ``Resize(antialias=1)`` is close
but not equal (ONNX Runtime: cosine 0.99992 on multi-scale descriptors; OpenVINO: 0.975).
The canvas size is fixed per graph, though, and the resize is linear and separable, so it
is two constant matrices: ``Y = A_h X A_w^T``. Each matrix is made by PyTorch's own
operator, applied to an identity basis, so the graph computes PyTorch's resize itself
(to float32 summation order), in any runtime.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["register", "resize_matrix"]


def resize_matrix(size: int, out: int) -> torch.Tensor:
    """(out, size): row i holds the weights of output pixel i over the `size` input pixels
    of one axis, from PyTorch's antialiased bilinear resize."""
    # Image j is row j lit alone; two columns wide, because PyTorch resizes a one-pixel-wide
    # image by another rule.
    basis = torch.eye(size).view(size, 1, size, 1).expand(size, 1, size, 2)
    return F.interpolate(basis, size=(out, 2), mode="bilinear", align_corners=False, antialias=True)[:, 0, :, 0].T


def _symbolic(g: Any, x: Any, output_size: Any, align_corners: Any, *scales: Any) -> Any:
    """aten::_upsample_bilinear2d_aa as two MatMuls with constant matrices."""
    import importlib

    symbolic_helper: Any = importlib.import_module("torch.onnx.symbolic_helper")  # untyped exporter internals
    sizes = symbolic_helper._get_tensor_sizes(x)
    height, width = sizes[-2], sizes[-1]
    out_h, out_w = symbolic_helper._parse_arg(output_size, "is")
    if height is None or width is None or symbolic_helper._parse_arg(align_corners, "i"):
        raise NotImplementedError("antialiased resize in ONNX needs a fixed input size and align_corners=False")
    rows = g.op("Constant", value_t=resize_matrix(height, out_h))  # (out_h, H)
    cols = g.op("Constant", value_t=resize_matrix(width, out_w).T.contiguous())  # (W, out_w)
    return g.op("MatMul", g.op("MatMul", rows, x), cols)


def register(opset: int) -> None:
    """Teach the TorchScript exporter the antialiased resize (idempotent)."""
    exporter: Any = torch.onnx  # register_custom_op_symbolic is public, but not in torch.onnx's __all__
    exporter.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _symbolic, opset)
