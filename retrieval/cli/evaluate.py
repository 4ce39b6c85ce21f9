"""``retrieve eval``: retrieval quality on labelled images."""

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..options import EngineOptions
from .common import (
    RUN_DEFAULTS, BatchSize, Denoise, Device, Extractor, JsonOut, Precision, Quiet, Runtime, Workers, note, print_json,
    print_rows, progress_bar, report_failures, resolve_index_dir,
)

if TYPE_CHECKING:
    from ..evaluation.engine_eval import EvalReport
    from ..extractors import ExtractorConfig

DEFAULT_CUTOFFS = (1, 5, 10)
ImageList = Annotated[Optional[Path], typer.Option(metavar="FILE", help="A list of path[,label] lines.")]


def evaluate(
    data: Annotated[Optional[Path], typer.Argument(metavar="DATA", hidden=True)] = None,
    queries: ImageList = None,
    gallery: ImageList = None,
    index_dir: Annotated[Optional[Path], typer.Option(
        "--index-dir", "-i", metavar="NAME|DIR", show_default="a temporary one", parser=resolve_index_dir,
        help="Index to evaluate in, a name or a folder path (created if missing); gallery images it lacks are "
             "added.")] = None,
    extractor: Extractor = None,
    denoise: Denoise = None,
    at: Annotated[Optional[list[int]], typer.Option(
        "--at", min=1, metavar="N", show_default=", ".join(map(str, DEFAULT_CUTOFFS)),
        help="Cut-off N for P@N and R@N (repeatable).")] = None,
    device: Device = RUN_DEFAULTS.device,
    precision: Precision = RUN_DEFAULTS.precision,
    runtime: Runtime = RUN_DEFAULTS.runtime,
    batch_size: BatchSize = RUN_DEFAULTS.batch_size,
    workers: Workers = RUN_DEFAULTS.workers,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Measure mAP, precision@k and recall@k on labelled images.

    DATA is a folder with one subfolder per class, or a CSV of path,label lines: each
    image queries all the others. Or give --queries and --gallery lists.
    """
    from ..engine import Engine
    from ..evaluation.engine_eval import evaluate_engine
    from ..evaluation.labels import read_image_list, read_labelled

    if data is not None and gallery is None and queries is None:
        gallery_set, query_set = read_labelled(data), None
    elif data is None and gallery is not None:
        gallery_set, query_set = read_image_list(gallery), read_image_list(queries) if queries is not None else None
    else:
        raise typer.BadParameter("give a labelled DATA folder or CSV, or --gallery LIST (with --queries LIST)",
                                 param_hint="'--gallery'")
    options = EngineOptions(device=device, precision=precision, runtime=runtime, batch_size=batch_size,
                            workers=workers, denoise=denoise)
    with tempfile.TemporaryDirectory(prefix="retrieve-eval-") as tmp:
        with Engine.create(index_dir or Path(tmp), extractor, exist_ok=True, options=options) as engine, \
                progress_bar(not quiet) as progress:
            report = evaluate_engine(engine, gallery_set, query_set, at or DEFAULT_CUTOFFS, progress)
            config = engine.manifest.config
    _print_report(report, config, json_out)


def _print_report(report: "EvalReport", config: "ExtractorConfig", json_out: bool) -> None:
    report_failures(report.failed)
    if json_out:
        print_json({**report.to_dict(), "extractor": {"kind": config.kind, "backbone": config.backbone,
                                                      "weights": config.weights}})
        return
    scores = report.scores
    print_rows(("metric", "value"), [
        ("mAP", f"{scores.map:.4f}"),
        *((f"P@{n}", f"{p:.4f}") for n, p in scores.precision_at.items()),
        *((f"R@{n}", f"{r:.4f}") for n, r in scores.recall_at.items()),
    ])
    note(f"{scores.queries} queries against {report.gallery} gallery images"
         + (" (leave-one-out)" if report.leave_one_out else "")
         + f"; {config.kind} extractor {config.weights or config.backbone}, {report.seconds:.1f} s")
