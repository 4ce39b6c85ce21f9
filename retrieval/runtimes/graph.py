"""What goes into an exported graph, and the export itself.

The graph is the extractor's own network (:class:`~retrieval.extractors.bottleneck.DescriptorNet`
or a trained subclass), copied, not re-implemented: uint8 canvases in, normalisation,
trunk, masked pooling, projection head and L2 inside, unit vectors out, at every scale
the extractor embeds (:func:`embed_scales`). Only R-MAC is swapped for its fixed-grid
form (:mod:`.regions`), the one pooling whose PyTorch code branches on the data.

Inputs (batch size dynamic, canvas side fixed to the manifest's image size):
``pixels`` uint8 (N, S, S, 3) RGB canvases, image top-left, grey (128) padding;
``heights``, ``widths`` int64 (N,) the valid size of each image inside its canvas.
Output ``vectors`` float32 (N, dim), L2-normalised. A denoiser graph maps ``pixels`` to
cleaned ``pixels`` of the same shape.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from ..extractors.base import Extractor
from ..extractors.bottleneck import BottleneckExtractor
from ..extractors.denoise import Denoiser
from ..extractors.pooling.multiscale import embed_scales
from ..extractors.pooling.regional import RMAC
from .errors import ExportFailedError
from .regions import FixedGridRMAC
from .resize import register as register_resize

__all__ = ["DenoiserGraph", "DescriptorGraph", "export_denoiser", "export_descriptor", "exportable"]


def exportable(extractor: Extractor) -> BottleneckExtractor:
    """`extractor` as the PyTorch extractor whose network is exported.

    Raises:
        ExportFailedError: an extractor that does not keep its whole forward in one
            network (every built-in family does).
    """
    if not isinstance(extractor, BottleneckExtractor):
        raise ExportFailedError(f"a {type(extractor).__name__} has no single network to export to ONNX")
    return extractor


class DescriptorGraph(nn.Module):
    """An extractor's network at its scales, on the CPU in float32: what is exported."""

    def __init__(self, extractor: BottleneckExtractor) -> None:
        super().__init__()
        net = copy.deepcopy(extractor.net).to("cpu", torch.float32).eval()
        pooling = getattr(net, "pooling", None)
        if isinstance(pooling, RMAC):
            net.pooling = FixedGridRMAC(pooling)
        self.net = net
        self.scales = extractor.manifest.config.scales
        self.exponent = extractor.scale_exponent

    def forward(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        return embed_scales(self.net, pixels, heights, widths, self.scales, self.exponent)


class DenoiserGraph(nn.Module):
    """A denoiser's cleaning step (uint8 canvases in and out) as a module."""

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.denoiser = copy.copy(denoiser)
        self.denoiser.model = copy.deepcopy(denoiser.model).to("cpu", torch.float32).eval()
        self.denoiser.device, self.denoiser.precision = torch.device("cpu"), "fp32"
        self.model = self.denoiser.model  # registered, so its weights become the graph's initialisers

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.denoiser.clean(pixels)


def _example(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two canvases, one tall and one wide image: the example the exporter traces."""
    pixels = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return pixels, torch.tensor([size, size * 3 // 4]), torch.tensor([size * 2 // 3, size])


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], output: str, path: Path,
            opset: int, what: str) -> None:
    axes = {name: {0: "batch"} for name in [*names, output]}
    register_resize(opset)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about constants: the canvas size is one by design
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=names,
                              output_names=[output], dynamic_axes=axes)
    except ImportError as e:
        raise ExportFailedError(f"exporting to ONNX needs the onnx package ({e.name or e}); "
                                "pip install onnx") from None
    except Exception as e:  # the exporter raises many types; the first line says which operator failed
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportFailedError(f"cannot export the {what} to ONNX: {first}") from None


def export_descriptor(extractor: Extractor, path: Path, opset: int) -> None:
    """Write `extractor`'s whole descriptor as an ONNX graph at `path`.

    Raises:
        ExportFailedError: the exporter failed (the message names why, on one line).
    """
    source = exportable(extractor)
    graph = DescriptorGraph(source)
    _export(graph, _example(source.manifest.config.image_size), ["pixels", "heights", "widths"], "vectors",
            path, opset, f"{source.manifest.config.kind} extractor")


def export_denoiser(denoiser: Denoiser, image_size: int, path: Path, opset: int) -> None:
    """Write `denoiser`'s cleaning of `image_size` canvases as an ONNX graph at `path`."""
    _export(DenoiserGraph(denoiser), _example(image_size)[:1], ["pixels"], "pixels_clean", path, opset,
            "denoiser")
