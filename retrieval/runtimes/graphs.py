"""Loading a runtime's session on a cached graph, exporting the graph when it is missing,
damaged or unloadable: the one place the cache, the exporter and the runtimes meet."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..extractors.config import Manifest
from .cache import OPSET, CachedGraph, graph_key
from .errors import ExportFailedError, RuntimeUnavailableError, RuntimeUnsupportedError
from .session import GraphExtractor, Session, open_session

if TYPE_CHECKING:  # these import PyTorch, which a cached descriptor graph runs without
    from ..extractors.base import Extractor
    from ..extractors.denoise import Denoiser
    from .denoising import GraphDenoiser

__all__ = ["INPUTS", "denoiser_graph", "descriptor_graph", "graph_denoiser", "graph_extractor", "load_session"]

log = logging.getLogger(__name__)

INPUTS = {  # what a descriptor graph takes and gives, recorded in every sidecar
    "pixels": "uint8 (N, S, S, 3): RGB canvases of side S = config.image_size, the image at the top left",
    "heights": "int64 (N,): each image's valid height inside its canvas, in pixels",
    "widths": "int64 (N,): each image's valid width inside its canvas, in pixels",
    "vectors": "float32 (N, dim) output: L2-normalised descriptors",
}


def descriptor_graph(manifest: Manifest) -> CachedGraph:
    """The cache entry of `manifest`'s descriptor graph (which may not exist yet): one
    float32 graph whatever precision a runtime then compiles it in."""
    manifest = replace(manifest, precision="fp32")
    info: dict[str, Any] = {"manifest": manifest.to_dict(), "opset": OPSET, "io": INPUTS}
    return CachedGraph(graph_key("descriptor", manifest.identity()), info)


def denoiser_graph(denoiser: Denoiser, image_size: int) -> CachedGraph:
    """The cache entry of `denoiser`'s graph for canvases of side `image_size`."""
    from ..extractors.backbones import weights_digest

    identity = {"weights_digest": weights_digest(denoiser.model), "image_size": image_size}
    return CachedGraph(graph_key("denoiser", identity), {"denoiser": identity, "opset": OPSET})


def load_session(runtime: str, cached: CachedGraph, export: Callable[[Path], None] | None, threads: int,
                 precision: str = "fp32") -> Session | None:
    """`runtime`'s session on the cached graph, in `precision`, exported with `export` when missing or
    damaged; a graph that fails to load is exported once more. None when the graph is not
    cached and there is nothing to export it from (`export` None).

    Raises:
        ExportFailedError: the export failed, or its graph does not load.
        RuntimeUnavailableError: the runtime is not installed.
    """
    for attempt in range(2):
        if not cached.valid():
            if export is None:
                return None
            cached.ensure(export)
        try:
            return open_session(runtime, cached.path, threads, precision)
        except (RuntimeUnavailableError, RuntimeUnsupportedError):
            raise
        except Exception as e:  # runtimes raise their own types for a graph they reject
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            cached.discard()
            if export is None:  # the caller builds the PyTorch model and asks again, with an export
                return None
            if attempt:
                raise ExportFailedError(f"runtime {runtime} cannot load the exported graph {cached.path}: "
                                        f"{first}") from None
            log.warning("runtime %s cannot load %s (%s): exporting it again", runtime, cached.path, first)
    return None


def graph_extractor(runtime: str, manifest: Manifest, source: Extractor | None, threads: int,
                    precision: str = "fp32") -> GraphExtractor | None:
    """`runtime` running `manifest`'s descriptor graph in `precision` (which its manifest
    then records), exported from `source` (a PyTorch extractor with that manifest) if it is
    not cached; None if it is not cached and `source` is None (the caller then builds the
    PyTorch extractor and asks again)."""
    cached = descriptor_graph(manifest)

    def export(path: Path) -> None:
        from .graph import export_descriptor

        assert source is not None
        export_descriptor(source, path, OPSET)

    session = load_session(runtime, cached, None if source is None else export, threads, precision)
    return None if session is None else GraphExtractor(replace(manifest, precision=precision), runtime, session,
                                                       cached.path)


def graph_denoiser(runtime: str, denoiser: Denoiser, image_size: int, threads: int) -> GraphDenoiser:
    """`denoiser` cleaning `image_size` canvases in `runtime`."""
    from .denoising import GraphDenoiser
    from .graph import export_denoiser

    cached = denoiser_graph(denoiser, image_size)
    session = load_session(runtime, cached, lambda path: export_denoiser(denoiser, image_size, path, OPSET), threads)
    assert session is not None  # with an export function, load_session returns a session or raises
    return GraphDenoiser(denoiser, runtime, session, cached.path)
