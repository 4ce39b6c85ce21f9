"""Inference runtimes: the extractor's network exported once to ONNX and run by ONNX
Runtime or OpenVINO on the CPU, where they are several times faster than PyTorch eager.

``--runtime`` (:data:`retrieval.options.RUNTIMES`): ``torch`` runs the PyTorch extractor;
``onnx`` and ``openvino`` run its exported graph (:mod:`.graph`, cached by :mod:`.cache`)
in that runtime (:mod:`.session`); ``auto`` is PyTorch on a GPU or in reduced precision,
and on the CPU in float32 the fastest installed runtime whose vectors agree with
PyTorch's (:mod:`.choice`). Every runtime gives the PyTorch extractor's manifest, so an
index built with one is searched with another.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RetrievalError
from ..options import check_runtime, resolve_device, resolve_precision
from .errors import ExportFailedError, RuntimeUnavailableError, RuntimeUnsupportedError

if TYPE_CHECKING:
    import torch

    from ..extractors.base import Extractor
    from ..extractors.config import ExtractorConfig, Manifest
    from ..extractors.denoise import Denoiser

__all__ = ["ExportFailedError", "RuntimeUnavailableError", "RuntimeUnsupportedError", "create_runtime_extractor",
           "export_onnx", "runtime_denoiser"]


def create_runtime_extractor(config: ExtractorConfig, device: str | torch.device = "cpu", precision: str = "auto",
                             runtime: str = "auto", known: Manifest | None = None) -> Extractor:
    """The extractor `config` describes, run by `runtime`.

    Args:
        known: the manifest it must have (an existing index's): lets a cached graph load
            without building the PyTorch model first.

    Raises:
        RuntimeUnsupportedError: onnx or openvino asked for on a GPU or in reduced precision.
        RuntimeUnavailableError: the runtime asked for is not installed.
        ExportFailedError: the network cannot be exported (an explicit runtime only;
            ``auto`` falls back to PyTorch).
    """
    from ..extractors import create_extractor
    from .threads import intra_op_threads

    runtime, dev = check_runtime(runtime), resolve_device(device)
    exact = resolve_precision(precision, dev)
    on_cpu = dev.type == "cpu" and exact == "fp32"
    if runtime == "torch" or (runtime == "auto" and not on_cpu):
        return create_extractor(config, dev, exact)
    if not on_cpu:
        raise RuntimeUnsupportedError(f"runtime {runtime} runs float32 on the CPU only (here: {dev.type}, "
                                      f"{exact}); use --runtime torch or auto")
    if runtime == "auto":
        from .choice import auto_extractor

        return auto_extractor(config, known, intra_op_threads())
    from .graphs import graph_extractor

    if known is not None:
        warm = graph_extractor(runtime, known, None, intra_op_threads())
        if warm is not None:
            return warm
    source = create_extractor(config, dev, exact)
    built = graph_extractor(runtime, source.manifest, source, intra_op_threads())
    assert built is not None  # with a source to export from, it is built or raises
    return built


def runtime_denoiser(denoiser: Denoiser, extractor: Extractor) -> Denoiser:
    """`denoiser`, run by the same runtime as `extractor` (as it is when that is PyTorch)."""
    from .session import GraphDenoiser, GraphExtractor

    if not isinstance(extractor, GraphExtractor) or isinstance(denoiser, GraphDenoiser):
        return denoiser
    from .graphs import graph_denoiser
    from .threads import intra_op_threads

    return graph_denoiser(extractor.runtime, denoiser, extractor.manifest.config.image_size, intra_op_threads())


def export_onnx(extractor: Extractor, out: Path) -> Path:
    """Write `extractor`'s descriptor graph to `out` and its JSON sidecar (manifest, opset,
    inputs and outputs) beside it; returns the sidecar's path. The graph comes from the
    cache (exported there first if needed), so it is the very graph the engine runs.

    Raises:
        ExportFailedError: the export failed.
        RetrievalError: `out` cannot be written.
    """
    from .cache import write_atomic
    from .graphs import descriptor_graph
    from .graph import export_descriptor, exportable

    source = exportable(extractor)
    cached = descriptor_graph(source.manifest)
    path = cached.ensure(lambda p: export_descriptor(source, p, cached.info["opset"]))
    sidecar = out.with_name(out.name.removesuffix(".onnx") + ".json")
    try:
        write_atomic(out, lambda tmp: shutil.copyfile(path, tmp))
        write_atomic(sidecar, lambda tmp: tmp.write_text(cached.sidecar.read_text()))
    except OSError as e:
        raise RetrievalError(f"cannot write {out}: {e.strerror or e}") from None
    return sidecar
