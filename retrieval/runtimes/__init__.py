"""Inference runtimes: the extractor's network exported once to ONNX and run by ONNX
Runtime or OpenVINO on the CPU, where they are several times faster than PyTorch eager.

``--runtime`` (:data:`retrieval.options.RUNTIMES`): ``torch`` runs the PyTorch extractor;
``onnx`` and ``openvino`` run its exported graph (:mod:`.graph`, cached by :mod:`.cache`)
in that runtime (:mod:`.session`); ``auto`` is PyTorch on a GPU, OpenVINO for bfloat16 on
the CPU (PyTorch without it), and on the CPU in float32 the fastest installed runtime whose
vectors agree with PyTorch's (:mod:`.choice`). bfloat16 on the CPU is recorded in the
manifest (an index keeps making its vectors that way), and so is int8: the graph quantised
on calibration canvases of the user's own images (:mod:`.quantize`), run by OpenVINO.
Every runtime gives the PyTorch extractor's manifest, so an index built with one is
searched with another.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RetrievalError
from ..options import check_runtime, device_kind, resolve_device, resolve_precision
from .errors import ExportFailedError, RuntimeUnavailableError, RuntimeUnsupportedError

if TYPE_CHECKING:
    import torch

    from ..extractors.base import Extractor
    from ..extractors.config import ExtractorConfig, Manifest
    from ..extractors.denoise import Denoiser
    from .quantize import Calibration

__all__ = ["ExportFailedError", "RuntimeUnavailableError", "RuntimeUnsupportedError", "create_runtime_extractor",
           "export_onnx", "runtime_denoiser"]


def create_runtime_extractor(config: ExtractorConfig, device: str | torch.device = "cpu", precision: str = "auto",
                             runtime: str = "auto", known: Manifest | None = None,
                             calibration: Calibration | Sequence[str | os.PathLike[str]] | None = None,
                             ) -> Extractor:
    """The extractor `config` describes, run by `runtime`.

    Args:
        known: the manifest it must have (an existing index's): lets a cached graph load
            without building the PyTorch model first.
        calibration: for precision int8, the canvases its quantisation is calibrated on,
            or image files and folders to draw them from (:meth:`.quantize.Calibration.from_files`);
            not needed when `known` is an int8 manifest whose graph is cached.

    Raises:
        RuntimeUnsupportedError: onnx or openvino asked for on a GPU or in reduced precision
            (int8: torch, onnx, or a GPU).
        RetrievalError: int8 with neither `calibration` nor its quantised graph cached.
        RuntimeUnavailableError: the runtime asked for is not installed.
        ExportFailedError: the network cannot be exported (an explicit runtime only;
            ``auto`` falls back to PyTorch).
    """
    from ..extractors import create_extractor
    from .threads import intra_op_threads

    runtime, kind = check_runtime(runtime), device_kind(device)  # PyTorch stays unloaded on a CPU-only machine
    if precision == "auto" and known is not None and known.precision != "fp32":
        precision = known.precision  # the index's recorded choice, wherever it is opened
    if precision == "int8":
        return _int8(config, kind, runtime, known, calibration)
    exact = resolve_precision(precision, kind)
    on_cpu = kind == "cpu"
    if on_cpu and exact != "fp32":
        return _reduced_on_cpu(config, exact, runtime, known)
    if runtime == "torch" or (runtime == "auto" and not on_cpu):
        built = create_extractor(config, resolve_device(device), exact)
        if known is not None and known.precision == exact:  # GPU autocast fits a bf16 index as well
            built.manifest = replace(built.manifest, precision=exact)
        return built
    if not on_cpu:
        raise RuntimeUnsupportedError(f"runtime {runtime} runs float32 on the CPU only (here: {kind}, "
                                      f"{exact}); use --runtime torch or auto")
    if runtime == "auto":
        from .choice import auto_extractor

        return auto_extractor(config, known, intra_op_threads())
    return _graph(runtime, config, known, "fp32")


def _graph(runtime: str, config: ExtractorConfig, known: Manifest | None, precision: str) -> Extractor:
    """`runtime` running `config`'s graph in `precision`: from the cache when `known` (an
    index's manifest) finds it there, else exported from the PyTorch extractor built now."""
    from ..extractors import create_extractor
    from .graphs import graph_extractor
    from .threads import intra_op_threads

    warm = graph_extractor(runtime, known, None, intra_op_threads(), precision) if known is not None else None
    if warm is not None:
        return warm
    source = create_extractor(config, "cpu", "fp32")
    built = graph_extractor(runtime, source.manifest, source, intra_op_threads(), precision)
    assert built is not None  # with a source to export from, it is built or raises
    return built


def _reduced_on_cpu(config: ExtractorConfig, precision: str, runtime: str, known: Manifest | None) -> Extractor:
    """`--precision bf16` on the CPU: OpenVINO's bfloat16 graph where installed (``auto`` and
    ``openvino``), else PyTorch's autocast (``auto`` and ``torch``); only on a CPU that runs
    bfloat16 natively, since emulated it is slower than float32. The manifest records it.

    Raises:
        RuntimeUnsupportedError: another reduced precision, ONNX Runtime, or a CPU
            without native bfloat16.
        RuntimeUnavailableError: ``openvino`` asked for and not installed.
    """
    from ..extractors import create_extractor
    from .session import installed

    if precision != "bf16":
        raise RuntimeUnsupportedError(f"{precision} runs on a GPU only; on the CPU choose fp32 or bf16")
    if runtime == "onnx":
        raise RuntimeUnsupportedError("runtime onnx runs float32 on the CPU only; bf16 runs in --runtime openvino "
                                      "or torch")
    if runtime == "openvino" or (runtime == "auto" and installed("openvino")):
        from .openvino_runtime import native_bf16

        if not native_bf16():
            raise _emulated("OpenVINO")
        return _graph("openvino", config, known, "bf16")
    import torch

    if not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        raise _emulated("PyTorch")
    built = create_extractor(config, "cpu", "bf16")
    built.manifest = replace(built.manifest, precision="bf16")
    return built


def _int8(config: ExtractorConfig, kind: str, runtime: str, known: Manifest | None,
          calibration: Calibration | Sequence[str | os.PathLike[str]] | None) -> Extractor:
    """`--precision int8`: the graph quantised on `calibration` (or on the calibration
    `known`, an int8 index's manifest, records), run by OpenVINO on the CPU (see
    :mod:`.quantize` for why not ONNX Runtime).

    Raises:
        RuntimeUnsupportedError: a GPU, ``--runtime torch`` or ``onnx``.
        RuntimeUnavailableError: OpenVINO is not installed.
        RetrievalError: the quantised graph is not cached and no calibration is given.
        ExportFailedError: the export or the quantisation failed.
    """
    from ..extractors import create_extractor
    from .cache import OPSET
    from .graph import export_descriptor
    from .graphs import descriptor_graph, load_session
    from .quantize import CALIBRATION_KEY, Calibration, float_manifest, int8_manifest, quantize, quantized_graph
    from .session import RUNTIMES, GraphExtractor, installed
    from .threads import intra_op_threads

    if kind != "cpu":
        raise RuntimeUnsupportedError(f"int8 runs on the CPU only (here: {kind}); on a GPU use --precision auto")
    if runtime in ("torch", "onnx"):
        raise RuntimeUnsupportedError(f"int8 runs its quantised graph in OpenVINO only, not --runtime {runtime}; "
                                      "use --runtime openvino or auto")
    if not installed("openvino"):
        raise RuntimeUnavailableError(f"int8 runs in OpenVINO, which is not installed ({RUNTIMES['openvino'].install})")
    source = None
    if calibration is not None and not isinstance(calibration, Calibration):  # files: canvases made as indexing does
        source = create_extractor(config, "cpu", "fp32")
        calibration = Calibration.from_files(source.preprocessor, calibration)
    recorded = known.extra.get(CALIBRATION_KEY) if known is not None and known.precision == "int8" else None
    made = calibration.digest() if calibration is not None else None  # hashes its canvases (~50 MB): once
    digest = made or recorded
    if known is not None and digest is not None:  # an index's graph, quantised before: no PyTorch model
        cached = quantized_graph(descriptor_graph(float_manifest(known)), digest)
        session = load_session("openvino", cached, None, intra_op_threads())
        if session is not None:
            return GraphExtractor(int8_manifest(known, digest), "openvino", session, cached.path)
    if calibration is None or made is None:  # (both or neither)
        if recorded is not None:
            raise RetrievalError(f"the int8 graph of this index (calibration {recorded[:12]}) is neither in this "
                                 "machine's cache nor in the index folder (int8.onnx), and only the images it was "
                                 "calibrated on remake it: create the index again")
        raise RetrievalError("int8 needs calibration images (the first images indexed); none were given")
    source = source or create_extractor(config, "cpu", "fp32")
    float_cached = descriptor_graph(source.manifest)
    cached = quantized_graph(float_cached, made)

    def build(out: Path) -> None:
        quantize(float_cached.ensure(lambda path: export_descriptor(source, path, OPSET)), calibration, out)

    session = load_session("openvino", cached, build, intra_op_threads())
    assert session is not None  # with a quantiser to build it, it is loaded or raises
    return GraphExtractor(int8_manifest(source.manifest, made), "openvino", session, cached.path)


def _emulated(runtime: str) -> RuntimeUnsupportedError:
    return RuntimeUnsupportedError(f"this CPU has no native bfloat16 (AVX512-BF16 or AMX): {runtime} would emulate "
                                   "it, slower than float32; use --precision fp32")


def runtime_denoiser(denoiser: Denoiser, extractor: Extractor) -> Denoiser:
    """`denoiser`, run by the same runtime as `extractor` (as it is when that is PyTorch)."""
    from .denoising import GraphDenoiser
    from .session import GraphExtractor

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
