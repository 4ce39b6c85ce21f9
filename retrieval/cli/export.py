"""``retrieve export``: an extractor as a standalone ONNX graph, for other programs."""

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOut, json_or_line

FORMATS = ("onnx",)


def export(
    source: Annotated[str, typer.Argument(metavar="EXTRACTOR_OR_INDEX", hidden=True)],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Where to write the graph.")],
    file_format: Annotated[str, typer.Option("--format", metavar="FORMAT", help="Graph format: onnx.")] = "onnx",
    json_out: JsonOut = False,
) -> None:
    """Write an extractor as an ONNX graph, with a JSON sidecar of its manifest.

    EXTRACTOR_OR_INDEX is a backbone name, a `retrieve train` checkpoint folder, or an
    index folder (its extractor). The graph takes `pixels` (uint8, N x S x S x 3 RGB
    canvases, the image at the top left, grey 128 padding), `heights` and `widths` (int64,
    N: each image's size inside its canvas) and gives `vectors` (float32, N x dim, unit
    length): the index's own vectors. FILE.json records the manifest (canvas side S, how
    images are resized, normalisation) and the inputs.
    """
    from ..errors import UnknownNameError
    from ..extractors import create_extractor, resolve_extractor
    from ..opening import CATALOG_FILE
    from ..runtimes import export_onnx

    if file_format not in FORMATS:
        raise UnknownNameError(f"unknown export format {file_format!r}; choose {', '.join(FORMATS)}")
    index = Path(source).expanduser()
    if (index / CATALOG_FILE).is_file():
        from ..engine import Engine

        with Engine.open(index) as engine:
            manifest = engine.manifest
        extractor = create_extractor(manifest.config, "cpu", "fp32")
        manifest.check_compatible(extractor.manifest, "extractor available here")
    else:
        extractor = create_extractor(resolve_extractor(source), "cpu", "fp32")
    sidecar = export_onnx(extractor, out)
    described = {"graph": str(out), "sidecar": str(sidecar), "dim": extractor.manifest.dim,
                 "image_size": extractor.manifest.config.image_size}
    json_or_line(described, json_out, f"wrote {out} ({extractor.manifest.dim}-d vectors from "
                                      f"{described['image_size']} px canvases) and {sidecar}")
