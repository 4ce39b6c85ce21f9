"""Commands that write an index: ``index`` and ``reindex``."""

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..cluster.job import LOCAL
from ..errors import RetrievalError
from ..options import EngineOptions
from .common import (
    DEFAULT_INDEX_DIR, RUN_DEFAULTS, Backend, BackendParams, BatchSize, Decode, Denoise, Device, Extractor, IndexDir,
    JsonOut, Precision, Quiet, Runtime, Weights, Workers, extractor_spec, json_or_line, parse_pairs, progress_bar,
    report_failures,
)

log = logging.getLogger("retrieval.cli")

if TYPE_CHECKING:
    from ..indexing.run import IndexReport

# What a new index embeds with when no extractor option is given: ExtractorConfig's defaults,
# written out because importing the extractors would slow every --help (a test compares them).
NEW_EXTRACTOR = {"backbone": "tf_efficientnet_lite0", "pooling": "gem", "image_size": 288, "resize": "letterbox"}


def index(
    folders: Annotated[list[Path], typer.Argument(metavar="FOLDER", hidden=True)],
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    backbone: Annotated[Optional[str], typer.Option(
        metavar="NAME", show_default=f"{NEW_EXTRACTOR['backbone']} for a new index, else its own",
        help="CNN backbone (a wrong name lists them).")] = None,
    weights: Weights = None,
    pooling: Annotated[Optional[str], typer.Option(
        metavar="NAME", show_default=f"{NEW_EXTRACTOR['pooling']} for a new index, else its own",
        help="Global pooling: gem, avg, max or rmac (regional, --pooling-param levels=3).")] = None,
    pooling_param: Annotated[Optional[list[str]], typer.Option(
        metavar="KEY=VALUE", help="Pooling parameter, e.g. p=3 for GeM (repeatable; a wrong key lists them).")] = None,
    image_size: Annotated[Optional[int], typer.Option(
        min=1, metavar="PIXELS", show_default=f"{NEW_EXTRACTOR['image_size']} for a new index, else its own",
        help="Input canvas side.")] = None,
    scales: Annotated[Optional[str], typer.Option(
        metavar="S1,S2,...", help="Embed at these scales of the canvas and merge, e.g. 1,0.7071,0.5.")] = None,
    resize: Annotated[Optional[str], typer.Option(
        metavar="MODE", show_default=f"{NEW_EXTRACTOR['resize']} for a new index, else its own",
        help="How an image is fitted to the canvas (a wrong mode lists them).")] = None,
    extractor: Extractor = None,
    backend: Backend = None,
    param: BackendParams = None,
    denoise: Denoise = None,
    device: Device = RUN_DEFAULTS.device,
    precision: Precision = RUN_DEFAULTS.precision,
    runtime: Runtime = RUN_DEFAULTS.runtime,
    batch_size: BatchSize = RUN_DEFAULTS.batch_size,
    workers: Workers = RUN_DEFAULTS.workers,
    decode: Decode = RUN_DEFAULTS.decode,
    follow_links: Annotated[bool, typer.Option(
        "--follow-links", help="Follow symbolic links that lead out of the FOLDERs (left out by default).")] = False,
    exclude: Annotated[Optional[list[str]], typer.Option(
        metavar="GLOB", help="Leave out paths matching this pattern (or below this folder), in this run and every "
                             "later one (repeatable; `retrieve remove --list` shows them, --undo takes one back).")]
    = None,
    local: Annotated[Optional[str], typer.Option(
        metavar="NAME", help="Keep local features to find the same object (sift; a new index only; needs "
                             "retrieve[local]).")] = None,
    local_param: Annotated[Optional[list[str]], typer.Option(
        metavar="KEY=VALUE", help="Local-feature parameter, e.g. max_features=1000 (repeatable).")] = None,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Embed what is new on Ray: the cluster RAY_ADDRESS names, else a Ray started here; "
                      "planning and the catalog stay here. Needs retrieve[ray].")] = False,
    ray_address: Annotated[Optional[str], typer.Option(
        metavar="ADDRESS", help="Embed on the Ray cluster at ADDRESS (auto, ray://head:10001); implies --ray.")]
    = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Add new and changed images, forget vanished ones.

    FOLDERs (or image files) are searched recursively, leaving out hidden files and
    folders and thumbnail caches (@eaDir, __MACOSX, ...; name a hidden folder as a FOLDER
    to index it); files of other types are counted and named. The first run creates the
    index, and leaves none behind if it found no image.
    The extractor options (--backbone to --resize, or --extractor) are recorded in a new
    index, the engine's defaults standing in for those left out (`retrieve info` shows
    them); on an existing index, each one given must match what it holds.
    """
    from ..engine import Engine

    spec = extractor_spec(extractor, backbone=backbone, weights=str(weights) if weights else None, pooling=pooling,
                          pooling_params=parse_pairs(pooling_param, "--pooling-param") or None,
                          image_size=image_size, resize=resize, scales=scales)
    options = EngineOptions(device=device, precision=precision, runtime=runtime, batch_size=batch_size,
                            workers=workers, decode=decode, denoise=denoise, denoise_at="index")
    local_params = parse_pairs(local_param, "--local-param")
    local_spec = {"name": local or "sift", "params": local_params} if local or local_params else None
    for folder in folders:  # before anything is created: a typo leaves no index behind
        if not folder.exists():
            raise RetrievalError(f"folder not found: {folder.absolute()}")
    with _first_run(index_dir) as first:
        with Engine.create(index_dir, spec, backend=backend, backend_params=parse_pairs(param, "--param"),
                           exist_ok=True, options=options, local_features=local_spec,
                           calibration=folders) as engine, \
                progress_bar(not quiet) as progress:
            try:
                removed, _ = engine.exclude(exclude, strict=False) if exclude else (0, [])
                report = engine.index(folders, progress=progress, follow_links=follow_links,
                                      ray=ray_address or (LOCAL if ray else None))
                report.removed += removed  # what --exclude took out is this command's removal too
            finally:
                first.filled = len(engine) > 0
    if first.new and not first.filled:
        report_failures(report.failed)
        raise RetrievalError(f"no image indexed from {', '.join(str(f.absolute()) for f in folders)} ("
                             f"{len(report.failed)} failed, {len(report.unknown)} of unknown types"
                             + (f": {report.unknown_suffixes()}" if report.unknown else "")
                             + f"); no index was created at {index_dir.absolute()}")
    _print_report(report, json_out)


@dataclass
class _FirstRun:
    new: bool  # no bundle was there: this run creates it
    filled: bool = False  # set by the run: the bundle holds an image


@contextmanager
def _first_run(index_dir: Path) -> Iterator[_FirstRun]:
    """Remove the bundle a first run created unless it indexed an image (the body sets
    `filled`): a first run that found nothing, or failed, leaves no catalog behind. A
    bundle that was there before is never touched, nor is an empty folder the user made."""
    made_folder = not index_dir.exists()
    first = _FirstRun(new=made_folder or not any(index_dir.iterdir()))
    try:
        yield first
    finally:
        if first.new and not first.filled:
            if made_folder:
                shutil.rmtree(index_dir, ignore_errors=True)
            else:
                for entry in index_dir.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)


def _print_report(report: "IndexReport", json_out: bool) -> None:
    """What an indexing run did: failures and files of unknown types on stderr, the counts on stdout."""
    report_failures(report.failed)
    report_failures(report.skipped, "left out")
    report_failures([(p, "unknown file type") for p in report.unknown], "not read")
    unknown = f", unknown types {len(report.unknown)} ({report.unknown_suffixes()})" if report.unknown else ""
    excluded = f", excluded {report.excluded}" if report.excluded else ""
    if report.stages:
        log.info("where the time went: %s", report.where_the_time_went())
    json_or_line(report.to_dict(), json_out,
                 f"added {report.added}, updated {report.updated}, moved {report.moved}, "
                 f"duplicates {report.duplicates}, removed {report.removed}, unchanged {report.unchanged}, "
                 f"failed {len(report.failed)}{unknown}{excluded}: {report.embedded} images embedded in "
                 f"{report.seconds:.1f} s ({report.images_per_second:.1f} images/s)")


def reindex(
    backend: Backend = None,
    param: BackendParams = None,
    whiten: Annotated[Optional[bool], typer.Option(
        "--whiten/--no-whiten", show_default=False,
        help="Learn a PCA-whitening from the indexed vectors and compare vectors whitened (helps finding the "
             "same object, hurts category search), or stop whitening. Default: as before.")] = None,
    whiten_dim: Annotated[Optional[int], typer.Option(
        min=1, metavar="DIMS", help="Keep at most this many whitened dimensions (with --whiten).")] = None,
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    json_out: JsonOut = False,
) -> None:
    """Rebuild or switch the ANN index; no image is read.

    The index is built again from the vectors stored in the catalog.
    """
    from ..engine import Engine

    if whiten_dim is not None and not whiten:
        raise RetrievalError("--whiten-dim goes with --whiten")
    with Engine.open(index_dir) as engine:
        start = time.perf_counter()
        described = engine.reindex(backend, whiten=whiten, whiten_dim=whiten_dim, **parse_pairs(param, "--param"))
        described["seconds"] = round(time.perf_counter() - start, 3)
    whitened = described.get("whitening")
    note = (f", whitened to {whitened['dim']} dimensions (learned from {whitened['learned_from']} images)"
            if whitened else "")
    json_or_line(described, json_out, f"rebuilt {described['effective']} index of {described['count']} vectors "
                                      f"in {described['seconds']:.2f} s, parameters {described['params']}{note}")
