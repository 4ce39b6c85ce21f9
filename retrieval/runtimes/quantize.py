"""int8: the float32 descriptor graph statically quantised by ONNX Runtime's tools,
calibrated on the user's own images, and run by OpenVINO.

Why these settings (measured on this project's 2-core AMD EPYC with AVX512-VNNI, default
extractor, scripts/bench_runtime.py): QDQ format, every operator the quantiser knows, not
only Conv (with Conv alone the lowest cosine with float32 fell to 0.68 on 73 Caltech-101
photos, in either runtime: presumably each conv's output is quantised over its whole
pre-ReLU6 range, where the clip keeps only 0..6), unsigned 8-bit activations, signed 8-bit
weights per output channel, MinMax ranges from 200 images. OpenVINO runs that graph at 168
images/s against 92 for its float32 graph and 28 for PyTorch eager (one run), and on all
2,893 Caltech-101 test images its vectors give mAP 0.7532 against 0.7524 in float32
(cosine with PyTorch's: lowest 0.948, mean 0.990). ONNX Runtime does not run it: on the same
graph its u8s8 kernels gave vectors far off (lowest cosine 0.84 where OpenVINO gave 0.97),
and quantised with signed activations (s8s8) it agrees but runs slower than its own float32
graph.

The quantised graph is cached beside the float one under a key of the float graph's key,
the calibration set's digest (the exact canvases the ranges came from) and the settings;
the manifest records precision "int8" and that digest (:data:`CALIBRATION_KEY` in
``Manifest.extra``), so vectors of another calibration, or float32 ones, never join the
index, and a query of the index finds the very graph its vectors came from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import RetrievalError
from .cache import CachedGraph, graph_key, write_atomic
from .errors import ExportFailedError

if TYPE_CHECKING:
    from PIL import Image

    from ..extractors.config import Manifest
    from ..images.preprocess import CanvasMaker

__all__ = ["BUNDLE_GRAPH", "CALIBRATION_IMAGES", "CALIBRATION_KEY", "SETTINGS", "Calibration", "float_manifest",
           "int8_manifest", "keep_in_bundle", "quantize", "quantized_graph", "restore_from_bundle"]

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 200  # the first images of what is indexed; the ranges settle well before
CALIBRATION_KEY = "int8_calibration"  # in Manifest.extra: the digest of the canvases the ranges came from
SETTINGS = {"format": "QDQ", "activations": "QUInt8", "weights": "QInt8", "per_channel": True,
            "method": "MinMax", "operators": "all"}
_BATCH = 16  # canvases per calibration run: the calibrator keeps every output of every batch


@dataclass(frozen=True)
class Calibration:
    """The canvases the activation ranges are measured on: what the extractor embeds, made
    by the manifest's own preprocessing (``pixels`` uint8 (N, S, S, 3), ``heights`` and
    ``widths`` int64 (N,))."""

    pixels: np.ndarray
    heights: np.ndarray
    widths: np.ndarray

    @classmethod
    def of(cls, preprocess: CanvasMaker, images: Iterable[Image.Image], limit: int = CALIBRATION_IMAGES,
           ) -> Calibration:
        """The first `limit` of `images`, letterboxed by `preprocess`.

        Raises:
            RetrievalError: no image given.
        """
        made = [preprocess(image) for _, image in zip(range(limit), images)]
        if not made:
            raise RetrievalError("int8 needs calibration images (the first images indexed); none were given")
        return cls(np.stack([m[0] for m in made]), np.array([m[1] for m in made], np.int64),
                   np.array([m[2] for m in made], np.int64))

    @classmethod
    def from_files(cls, preprocess: CanvasMaker, roots: Iterable[str | os.PathLike[str]],
                   limit: int = CALIBRATION_IMAGES) -> Calibration:
        """`limit` images spread evenly over the image files below `roots` (files or
        folders, found as indexing finds them), those that decode.

        Raises:
            RetrievalError: no image below `roots` decodes.
        """
        from ..images.decode import load_image
        from ..images.files import discover

        files = list(discover(roots))
        spread = files[::max(1, len(files) // limit)] + files  # then the rest, for those that fail

        def decoded() -> Iterator[Image.Image]:
            for path in dict.fromkeys(spread):
                try:
                    yield load_image(path).image
                except RetrievalError:
                    continue

        return cls.of(preprocess, decoded(), limit)

    def digest(self) -> str:
        """What names this calibration: the canvases' bytes and the settings."""
        h = hashlib.sha256(repr(sorted(SETTINGS.items())).encode())
        for array in (self.pixels, self.heights, self.widths):
            h.update(str(array.shape).encode())
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:32]

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self.pixels), _BATCH):
            yield {"pixels": self.pixels[i:i + _BATCH], "heights": self.heights[i:i + _BATCH],
                   "widths": self.widths[i:i + _BATCH]}


def float_manifest(manifest: Manifest) -> Manifest:
    """`manifest` as its float32 graph has it: without precision and calibration."""
    extra = {k: v for k, v in manifest.extra.items() if k != CALIBRATION_KEY}
    return replace(manifest, precision="fp32", extra=extra)


def int8_manifest(manifest: Manifest, digest: str) -> Manifest:
    """The manifest of vectors made by the graph quantised on calibration `digest`."""
    base = float_manifest(manifest)
    return replace(base, precision="int8", extra={**base.extra, CALIBRATION_KEY: digest})


BUNDLE_GRAPH = "int8.onnx"
"""An int8 index's own copy of its quantised graph, in its bundle: only the calibration
images remake the graph, so an index copied to another machine (or a cleared cache) finds
it there."""


def keep_in_bundle(graph: Path, bundle: Path) -> None:
    """Copy a new int8 index's quantised graph (`graph`, in the cache) into its bundle.

    Raises:
        OSError: the bundle cannot be written (its creation fails: nothing is half made).
    """
    write_atomic(bundle / BUNDLE_GRAPH, lambda out: shutil.copyfile(graph, out))


def restore_from_bundle(manifest: Manifest, bundle: Path) -> None:
    """Put an int8 index's graph back in this machine's cache from the bundle's copy, when
    the cache lacks it (another machine, a cleared cache). A copy that cannot be restored
    is left: opening then says in one line that the graph is missing."""
    digest = manifest.extra.get(CALIBRATION_KEY)
    kept = bundle / BUNDLE_GRAPH
    if manifest.precision != "int8" or not isinstance(digest, str) or not kept.is_file():
        return
    from .graphs import descriptor_graph

    cached = quantized_graph(descriptor_graph(float_manifest(manifest)), digest)
    def copy(out: Path) -> None:
        shutil.copyfile(kept, out)

    if not cached.valid():
        try:
            cached.store(copy)
        except ExportFailedError as e:
            log.warning("%s", e)


def quantized_graph(float_graph: CachedGraph, digest: str) -> CachedGraph:
    """The cache entry of `float_graph` quantised on calibration `digest`."""
    identity = {"float": float_graph.path.stem, "calibration": digest, "settings": SETTINGS}
    return CachedGraph(graph_key("int8", identity), {**float_graph.info, "int8": identity},
                       float_graph.path.parent.parent)


def quantize(float_path: Path, calibration: Calibration, out: Path) -> None:
    """Write `float_path`'s graph, statically quantised on `calibration`, at `out`.

    Raises:
        ExportFailedError: ONNX Runtime's quantiser failed (the message names why).
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration.batches()

        def get_next(self) -> dict[str, Any] | None:  # pyright: ignore[reportIncompatibleMethodOverride]
            # None ends the data (as the quantiser's docs say; its annotation leaves None out)
            return next(self.batches, None)

    try:
        with tempfile.TemporaryDirectory(prefix="retrieve-int8-") as tmp:
            # Shape inference and ORT's graph optimisations first: the canvas side is fixed,
            # so the "same"-padding arithmetic folds away and Conv+Clip pairs are seen whole.
            # The symbolic pass is skipped: it cannot follow the masked pooling's shapes.
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    except Exception as e:  # the quantiser raises many types; the first line says what failed
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportFailedError(f"cannot quantise the graph to int8: {first}") from None
