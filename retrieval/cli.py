"""`retrieve`: the command-line shell over :class:`retrieval.Engine`.

Results go to stdout (a table, or JSON with --json); progress, warnings and errors go to
stderr. A user error prints one line and exits with code 2; nothing here holds logic
that another front end would need.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .ann import BACKENDS
from .duplicates import DEFAULT_THRESHOLD
from .engine import Engine, Hit, IndexReport
from .errors import IndexNotFoundError, RetrievalError
from .extractors import POOLINGS, ExtractorConfig, create_extractor, list_backbones, resolve_extractor
from .device_decode import DECODE_MODES
from .extractors.base import PRECISIONS, RESIZE_MODES
from .filters import Filter, parse_date
from .training.autoencoder import AutoencoderSettings, train_autoencoder
from .training.corruptions import CorruptionSettings
from .training.data import read_image_list, read_labelled
from .training.evaluate import evaluate_engine
from .training.triplet import MINING, TripletSettings, train_triplet

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Content-based image retrieval: index folders of images, find similar ones.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_INDEX_DIR = "indexes/default"
INDEX_CHOICES = ", ".join([*BACKENDS, "auto"])
_TRIPLET, _AUTOENCODER = TripletSettings(), AutoencoderSettings()  # defaults of the train options

IndexDir = Annotated[Path, typer.Option("--index-dir", "-i", envvar="RETRIEVE_INDEX_DIR",
                                        help="Index bundle folder.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
Device = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
Precision = Annotated[str, typer.Option(help=f"Forward-pass precision: {', '.join(PRECISIONS)} "
                                             "(auto: bf16 on a GPU, fp32 on the CPU).")]
Workers = Annotated[Optional[int], typer.Option(min=0, help="Decode worker processes.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
ExtractorPath = Annotated[Optional[str], typer.Option(
    "--extractor", help="A trained checkpoint folder (`retrieve train`) or a backbone name to embed with.")]
Denoise = Annotated[Optional[Path], typer.Option(
    help="Denoising autoencoder checkpoint (`retrieve train autoencoder`): clean images before embedding them.")]


def main() -> None:
    """Console-script entry point."""
    app()


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn library errors into one line on stderr and exit code 2 (1 for a bug)."""
    try:
        yield
    except RetrievalError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to finish", highlight=False)
        raise typer.Exit(130) from None
    except Exception as e:  # a bug: say so in one line, the traceback on request
        if os.environ.get("RETRIEVE_DEBUG"):
            raise
        err.print(f"[red]internal error:[/red] {type(e).__name__}: {escape(str(e))} "
                  "(set RETRIEVE_DEBUG=1 for the traceback)",
                  highlight=False)
        raise typer.Exit(1) from None


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    bar = Progress(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=err, transient=True)
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
        yield update


@app.command("index")
def index_cmd(
    folders: Annotated[list[Path], typer.Argument(help="Folders (or files) of images, searched recursively.")],
    index_dir: IndexDir = Path(DEFAULT_INDEX_DIR),
    backbone: Annotated[Optional[str], typer.Option(help=f"CNN backbone: {', '.join(list_backbones())}.")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Local weights file for the backbone.")] = None,
    pooling: Annotated[Optional[str], typer.Option(help=f"Global pooling: {', '.join(POOLINGS)}.")] = None,
    gem_p: Annotated[Optional[float], typer.Option(help="GeM exponent.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Input canvas side in pixels.")] = None,
    resize: Annotated[Optional[str], typer.Option(help=f"Resize mode: {', '.join(RESIZE_MODES)}.")] = None,
    index_type: Annotated[str, typer.Option("--index", help=f"ANN index for a new index: {INDEX_CHOICES}.")] = "auto",
    param: Annotated[Optional[list[str]], typer.Option(help="Index parameter KEY=VALUE (repeatable).")] = None,
    extractor: ExtractorPath = None,
    denoise: Denoise = None,
    device: Device = "auto",
    precision: Precision = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    workers: Workers = None,
    decode: Annotated[str, typer.Option(help=f"Where JPEGs are decoded: {', '.join(DECODE_MODES)} "
                                             "(auto: on the GPU when --device is one, else in the workers).")] = "auto",
    json_out: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """Add new and changed images below FOLDERS, forget vanished ones."""
    with _user_errors():
        options = {"backbone": backbone, "weights": str(weights.resolve()) if weights else None,
                   "pooling": pooling, "gem_p": gem_p, "image_size": image_size, "resize": resize}
        engine_kwargs = {"device": device, "batch_size": batch_size, "workers": workers, "precision": precision,
                         "decode": decode, "denoise": denoise, "denoise_at": "index"}
        if extractor is not None and any(v is not None for v in options.values()):
            raise RetrievalError("--extractor replaces --backbone, --weights, --pooling, --gem-p, --image-size "
                                 "and --resize: give one or the others")
        try:
            engine = _open(index_dir, options["weights"], extractor, **engine_kwargs)
            engine.require_config(**{k: v for k, v in options.items() if k != "weights"})
        except IndexNotFoundError:
            config = resolve_extractor(extractor) if extractor is not None else \
                ExtractorConfig(**{k: v for k, v in options.items() if v is not None})
            engine = Engine.create(index_dir, config, index=index_type, index_params=_parse_pairs(param, "--param"),
                                   **engine_kwargs)
        with engine, _progress_bar(not quiet) as progress:
            report = engine.index(folders, progress=progress)
        _print_report(report, json_out)


def _open(index_dir: Path, weights: str | None, extractor: str | None = None, **kwargs: Any) -> Engine:
    """Open an index; with --weights or --extractor, embed with that file or checkpoint
    (its digest must match the index's)."""
    if weights is None and extractor is None:
        return Engine.open(index_dir, **kwargs)
    with Engine.open(index_dir) as index:  # that it exists, and its manifest: loads no model nor denoiser
        config = resolve_extractor(extractor) if extractor is not None else replace(index.manifest.config,
                                                                                    weights=weights)
    built = create_extractor(config, kwargs.get("device", "auto"), kwargs.get("precision", "auto"))
    return Engine.open(index_dir, extractor=built, **kwargs)


def _print_report(report: IndexReport, json_out: bool) -> None:
    for path, reason in report.failed[:20]:
        err.print(f"[yellow]skipped[/yellow] {escape(path)}: {escape(reason)}", highlight=False)
    if len(report.failed) > 20:
        err.print(f"... and {len(report.failed) - 20} more failed files (`retrieve info` lists them)")
    if json_out:
        print(json.dumps(report.to_dict()))
        return
    out.print(
        f"added {report.added}, updated {report.updated}, moved {report.moved}, "
        f"duplicates {report.duplicates}, removed {report.removed}, unchanged {report.unchanged}, "
        f"failed {len(report.failed)}: {report.embedded} images embedded in {report.seconds:.1f} s "
        f"({report.images_per_second:.1f} images/s)", highlight=False)


@app.command("query")
def query_cmd(
    images: Annotated[Optional[list[Path]], typer.Argument(help="Query image files; several are combined.")] = None,
    ids: Annotated[Optional[list[int]], typer.Option("--id", help="Query by an indexed image's id.")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="How many results.")] = 10,
    where: Annotated[Optional[list[str]], typer.Option(help="Metadata filter KEY=VALUE (repeatable).")] = None,
    path: Annotated[Optional[str], typer.Option(help="Only paths matching this glob, e.g. '*/2024/*'.")] = None,
    folder: Annotated[Optional[list[Path]], typer.Option(help="Only images below this folder (repeatable).")] = None,
    file_type: Annotated[Optional[list[str]], typer.Option("--type", help="Only this format: jpeg, png...")] = None,
    min_size: Annotated[Optional[int], typer.Option(help="Only files of at least this many bytes.")] = None,
    max_size: Annotated[Optional[int], typer.Option(help="Only files of at most this many bytes.")] = None,
    since: Annotated[Optional[str], typer.Option(help="Only files modified on or after this date.")] = None,
    until: Annotated[Optional[str], typer.Option(help="Only files modified on or before this date.")] = None,
    tag: Annotated[Optional[list[str]], typer.Option(help="Only images with this tag (repeatable: all).")] = None,
    dedup: Annotated[bool, typer.Option(help="Fold copies and near-copies into one result.")] = False,
    dedup_threshold: Annotated[float, typer.Option(help="Similarity above which --dedup folds.")] = DEFAULT_THRESHOLD,
    weights: Annotated[Optional[Path], typer.Option(help="The backbone's weights file, if it has moved.")] = None,
    extractor: ExtractorPath = None,
    denoise: Denoise = None,
    index_dir: IndexDir = Path(DEFAULT_INDEX_DIR),
    device: Device = "auto",
    precision: Precision = "auto",
    json_out: JsonFlag = False,
) -> None:
    """Find the indexed images most similar to IMAGES (and/or --id)."""
    with _user_errors():
        if not images and not ids:
            raise RetrievalError("give at least one query image or --id")
        filters = Filter(path_glob=path, folders=tuple(map(str, folder or ())), formats=tuple(file_type or ()),
                         min_bytes=min_size, max_bytes=max_size,
                         since=parse_date(since) if since else None, until=parse_date(until) if until else None,
                         tags=tuple(tag or ()), metadata=_parse_pairs(where, "--where"))
        with _open(index_dir, str(weights.resolve()) if weights else None, extractor, device=device,
                   precision=precision, denoise=denoise, denoise_at="query") as engine:
            start = time.perf_counter()
            query: list[Any] = [str(p) for p in images or []]
            if ids:
                query.append(engine.vectors(ids))
            hits = engine.search(query, k=k, where=None if filters == Filter() else filters, exclude=ids or (),
                                 dedup=dedup_threshold if dedup else None)
            elapsed = time.perf_counter() - start - engine.load_seconds
        _print_hits(hits, json_out, engine.load_seconds, elapsed)


def _parse_pairs(items: list[str] | None, option: str) -> dict[str, Any]:
    """KEY=VALUE options; values are JSON when they parse as JSON (numbers, true), else text."""
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RetrievalError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _print_hits(hits: list[Hit], json_out: bool, load_s: float, query_s: float) -> None:
    if json_out:
        print(json.dumps({
            "results": [{"rank": r, "id": h.id, "score": round(h.score, 6), "path": h.path, "metadata": h.metadata,
                         "duplicates": list(h.duplicates)} for r, h in enumerate(hits, 1)],
            "timing": {"model_load_s": round(load_s, 4), "query_s": round(query_s, 4)},
        }))
        return
    rows = [(str(rank), f"{h.score:.4f}", str(h.id), h.path + (f"  (+{len(h.duplicates)} duplicates)" if h.duplicates else ""))
            for rank, h in enumerate(hits, 1)]
    if out.is_terminal:
        table = Table("rank", "score", "id", "path")
        for row in rows:
            table.add_row(*map(escape, row))
        out.print(table)
    else:  # piped: one tab-separated line per hit, paths never folded
        print("\n".join("\t".join(row) for row in [("rank", "score", "id", "path"), *rows]))
    err.print(f"model load {load_s:.2f} s, query {query_s * 1000:.1f} ms", highlight=False)


@app.command("info")
def info_cmd(index_dir: IndexDir = Path(DEFAULT_INDEX_DIR), json_out: JsonFlag = False) -> None:
    """Show what an index holds: count, extractor, index type, size, failed files."""
    with _user_errors(), Engine.open(index_dir) as engine:
        info = engine.info()
    if json_out:
        print(json.dumps(info))
        return
    ex = info["extractor"]
    lines = [
        f"index       {info['path']}",
        f"images      {info['count']} indexed, {info['failed_count']} failed",
        f"extractor   {ex['kind']} {ex['backbone']}, {ex['pooling']} pooling"
        + (f" (p={ex['gem_p']})" if ex["gem_p"] else "") + f", {ex['image_size']} px {ex['resize']}",
        f"vectors     {info['dim']}-d, {ex['normalisation']}-normalised, weights {ex['weights_digest'][:12]}",
        f"ann index   {info['index']['type']}"
        + (f" (now {info['index']['effective']})" if info["index"]["type"] != info["index"]["effective"] else "")
        + "".join(f", {k}={v}" for k, v in info["index"]["params"].items() if v is not None),
        f"on disk     {info['size_bytes'] / 1e6:.2f} MB",
    ]
    out.print("\n".join(lines), highlight=False, markup=False)
    for f in info["failed"]:
        out.print(f"  failed    {f['path']}: {f['error']}", highlight=False, markup=False)


@app.command("remove")
def remove_cmd(
    items: Annotated[list[str], typer.Argument(help="Ids or paths of indexed images.")],
    index_dir: IndexDir = Path(DEFAULT_INDEX_DIR),
    json_out: JsonFlag = False,
) -> None:
    """Remove images from the index (the files themselves are not touched)."""
    with _user_errors(), Engine.open(index_dir) as engine:
        n = engine.remove(int(i) if i.isdigit() else i for i in items)
    print(json.dumps({"removed": n}) if json_out else f"removed {n}")


@app.command("reindex")
def reindex_cmd(
    index_type: Annotated[Optional[str], typer.Option("--index", help=f"Switch to: {INDEX_CHOICES}.")] = None,
    param: Annotated[Optional[list[str]], typer.Option(help="Index parameter KEY=VALUE (repeatable).")] = None,
    index_dir: IndexDir = Path(DEFAULT_INDEX_DIR),
    json_out: JsonFlag = False,
) -> None:
    """Rebuild (or switch) the ANN index from the stored vectors; no image is read."""
    with _user_errors(), Engine.open(index_dir) as engine:
        start = time.perf_counter()
        described = engine.reindex(index_type, **_parse_pairs(param, "--param"))
        described["seconds"] = round(time.perf_counter() - start, 3)
    if json_out:
        print(json.dumps(described))
    else:
        out.print(f"rebuilt {described['effective']} index of {described['count']} vectors "
                  f"in {described['seconds']:.2f} s, parameters {described['params']}", highlight=False, markup=False)


@app.command("tag")
def tag_cmd(
    items: Annotated[list[str], typer.Argument(help="Ids or paths of indexed images.")],
    add: Annotated[Optional[list[str]], typer.Option(help="Tag to add (repeatable).")] = None,
    remove: Annotated[Optional[list[str]], typer.Option(help="Tag to remove (repeatable).")] = None,
    index_dir: IndexDir = Path(DEFAULT_INDEX_DIR),
    json_out: JsonFlag = False,
) -> None:
    """Add or remove tags; query with --tag to filter on them."""
    with _user_errors():
        if not add and not remove:
            raise RetrievalError("give --add TAG and/or --remove TAG")
        with Engine.open(index_dir) as engine:
            n = engine.tag([int(i) if i.isdigit() else i for i in items], add or (), remove or ())
    print(json.dumps({"changed": n}) if json_out else f"changed {n}")


@app.command("dupes")
def dupes_cmd(
    threshold: Annotated[float, typer.Option(help="Cosine similarity for near duplicates.")] = DEFAULT_THRESHOLD,
    exact: Annotated[bool, typer.Option("--exact", help="Identical files only.")] = False,
    index_dir: IndexDir = Path(DEFAULT_INDEX_DIR),
    json_out: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """List groups of identical and near-identical images."""
    with _user_errors(), Engine.open(index_dir) as engine, _progress_bar(not quiet and not exact) as progress:
        groups = engine.duplicates(None if exact else threshold, progress=progress)
    if json_out:
        print(json.dumps([{"ids": list(g.ids), "paths": list(g.paths), "exact": g.exact, "score": g.score}
                          for g in groups]))
        return
    for n, g in enumerate(groups, 1):
        kind = "identical" if g.exact else f"similar >= {g.score:.3f}"
        out.print(f"group {n} ({len(g.ids)} images, {kind})", highlight=False, markup=False)
        for i, p in zip(g.ids, g.paths):
            out.print(f"  {i}\t{p}", highlight=False, markup=False)
    err.print(f"{len(groups)} groups", highlight=False)


@app.command("eval")
def eval_cmd(
    data: Annotated[Optional[Path], typer.Argument(
        help="Labelled folder (one subfolder per class) or CSV of path,label: each image queries the rest.")] = None,
    queries: Annotated[Optional[Path], typer.Option(help="Query images: a list of path[,label] lines.")] = None,
    gallery: Annotated[Optional[Path], typer.Option(help="Gallery images: a list of path[,label] lines.")] = None,
    index_dir: Annotated[Optional[Path], typer.Option(
        "--index", "--index-dir", "-i",
        help="Evaluate this existing index (gallery images it lacks are added); default: a temporary one.")] = None,
    extractor: ExtractorPath = None,
    denoise: Denoise = None,
    k: Annotated[Optional[list[int]], typer.Option("-k", min=1, help="Cut-offs for P@k and R@k (repeatable).")] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    workers: Workers = None,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """Measure mAP, precision@k and recall@k on labelled images."""
    with _user_errors():
        if (data is None) == (gallery is None) or (queries is not None and gallery is None):
            raise RetrievalError("give a labelled DATA folder or CSV, or --gallery LIST (with --queries LIST)")
        gallery_set = read_labelled(data) if data is not None else read_image_list(gallery)
        query_set = read_image_list(queries) if queries is not None else None
        kwargs = {"device": device, "precision": precision, "batch_size": batch_size, "workers": workers,
                  "denoise": denoise}
        with tempfile.TemporaryDirectory(prefix="retrieve-eval-") as tmp:
            engine = _open(index_dir, None, extractor, **kwargs) if index_dir is not None else \
                Engine.create(Path(tmp) / "bundle", extractor, **kwargs)
            with engine, _progress_bar(not quiet) as progress:
                report = evaluate_engine(engine, gallery_set, query_set, k or (1, 5, 10), progress)
                config = engine.manifest.config
    for path, reason in report.failed[:20]:
        err.print(f"[yellow]skipped[/yellow] {escape(path)}: {escape(reason)}", highlight=False)
    if json_out:
        print(json.dumps({**report.to_dict(), "extractor": {"kind": config.kind, "backbone": config.backbone,
                                                            "weights": config.weights}}))
        return
    table = Table("metric", "value", title=f"{report.scores.queries} queries against {report.gallery} gallery images"
                  + (" (leave-one-out)" if report.leave_one_out else ""))
    table.add_row("mAP", f"{report.scores.map:.4f}")
    for n in report.scores.precision_at:
        table.add_row(f"P@{n}", f"{report.scores.precision_at[n]:.4f}")
    for n in report.scores.recall_at:
        table.add_row(f"R@{n}", f"{report.scores.recall_at[n]:.4f}")
    out.print(table)
    err.print(f"{config.kind} extractor {config.weights or config.backbone}, {report.seconds:.1f} s", highlight=False)


train_app = typer.Typer(no_args_is_help=True, help="Train extractors: triplet fine-tuning, denoising autoencoders.")
app.add_typer(train_app, name="train")
Out = Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to write: afterwards an extractor path.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out.")]


@train_app.command("triplet")
def train_triplet_cmd(
    data: Annotated[Path, typer.Argument(help="Folder with one subfolder per class, or a CSV of path,label.")],
    out_dir: Out,
    epochs: Annotated[int, typer.Option(min=1)] = _TRIPLET.epochs,
    frozen_stages: Annotated[int, typer.Option(min=0, help="Leading trunk stages kept frozen (Lite0 has 9).")]
    = _TRIPLET.frozen_stages,
    dim: Annotated[int, typer.Option(min=1, help="Output dimension of the projection head.")] = _TRIPLET.dim,
    margin: Annotated[float, typer.Option(help="Triplet margin.")] = _TRIPLET.margin,
    mining: Annotated[str, typer.Option(help=f"Triplets mined in each batch: {', '.join(MINING)}.")]
    = _TRIPLET.mining,
    classes_per_batch: Annotated[int, typer.Option("--classes-per-batch", "-p", min=2, help="P classes per batch.")]
    = _TRIPLET.classes_per_batch,
    per_class: Annotated[int, typer.Option("--per-class", "-k", min=2, help="K images per class and batch.")]
    = _TRIPLET.per_class,
    lr: Annotated[float, typer.Option(help="Trunk learning rate.")] = _TRIPLET.lr,
    head_lr: Annotated[float, typer.Option(help="Head learning rate.")] = _TRIPLET.head_lr,
    image_size: Annotated[int, typer.Option(help="Training canvas side.")] = _TRIPLET.image_size,
    embed_size: Annotated[int, typer.Option(help="Canvas side the written extractor embeds at.")]
    = _TRIPLET.embed_size,
    cache_views: Annotated[int, typer.Option(min=0, help="Fixed augmented views per image with the frozen part "
                                                         "cached (fast on a CPU); 0: fresh views every epoch.")]
    = _TRIPLET.cache_views,
    val_fraction: Annotated[float, typer.Option(help="Share of each class held out for validation mAP.")]
    = _TRIPLET.val_fraction,
    backbone: Annotated[str, typer.Option(help=f"Trunk to fine-tune: {', '.join(list_backbones())}.")]
    = _TRIPLET.backbone,
    weights: Annotated[Optional[Path], typer.Option(help="Local weights file for the backbone.")] = None,
    seed: int = _TRIPLET.seed,
    resume: Resume = False,
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = None,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune a trunk and projection head with triplet loss on labelled images."""
    with _user_errors():
        settings = TripletSettings(
            epochs=epochs, backbone=backbone, backbone_weights=str(weights.resolve()) if weights else None,
            frozen_stages=frozen_stages, dim=dim, margin=margin, mining=mining, classes_per_batch=classes_per_batch,
            per_class=per_class, lr=lr, head_lr=head_lr, image_size=image_size, embed_size=embed_size,
            cache_views=cache_views, val_fraction=val_fraction, seed=seed, workers=workers, device=device,
            precision=precision)
        with _progress_bar(not quiet) as progress:
            result = train_triplet(data, out_dir, settings, resume=resume, progress=progress,
                                   on_epoch=_epoch_line("validation mAP"))
    _print_trained(result.to_dict(), "validation mAP", json_out)


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    data: Annotated[Path, typer.Argument(help="Folder of images (searched recursively), or a list of paths.")],
    out_dir: Out,
    epochs: Annotated[int, typer.Option(min=1)] = _AUTOENCODER.epochs,
    steps_per_epoch: Annotated[int, typer.Option(min=1)] = _AUTOENCODER.steps_per_epoch,
    noise_sigma: Annotated[float, typer.Option(help="Strongest Gaussian noise (sigma, 0-1 scale); 0: off.")]
    = _AUTOENCODER.corruptions.noise_sigma,
    salt_pepper: Annotated[float, typer.Option(help="Most salt-and-pepper (fraction of pixels); 0: off.")]
    = _AUTOENCODER.corruptions.salt_pepper,
    jpeg_quality: Annotated[int, typer.Option(help="Lowest JPEG quality; 100: off.")]
    = _AUTOENCODER.corruptions.jpeg_quality,
    blur_sigma: Annotated[float, typer.Option(help="Strongest Gaussian blur (sigma in pixels); 0: off.")]
    = _AUTOENCODER.corruptions.blur_sigma,
    width: Annotated[int, typer.Option(help="Channels of the first level (doubling per level).")]
    = _AUTOENCODER.width,
    levels: Annotated[int, typer.Option(help="Stride-2 levels down to the code.")] = _AUTOENCODER.levels,
    patch: Annotated[int, typer.Option(help="Training patch side.")] = _AUTOENCODER.patch,
    batch_size: Annotated[int, typer.Option(min=1)] = _AUTOENCODER.batch_size,
    lr: float = _AUTOENCODER.lr,
    image_size: Annotated[int, typer.Option(help="Canvas side images are letterboxed to (as the extractor's).")]
    = _AUTOENCODER.image_size,
    max_images: Annotated[int, typer.Option(min=1, help="Training images kept in memory.")]
    = _AUTOENCODER.max_images,
    seed: int = _AUTOENCODER.seed,
    resume: Resume = False,
    device: Device = "auto",
    precision: Precision = "auto",
    workers: Workers = None,
    json_out: JsonFlag = False,
    quiet: Quiet = False,
) -> None:
    """Train a denoising autoencoder: use it with --denoise, or as an extractor."""
    with _user_errors():
        settings = AutoencoderSettings(
            epochs=epochs, steps_per_epoch=steps_per_epoch, width=width, levels=levels, patch=patch,
            batch_size=batch_size, lr=lr, image_size=image_size, max_images=max_images, seed=seed,
            corruptions=CorruptionSettings(noise_sigma, salt_pepper, jpeg_quality, blur_sigma),
            workers=workers, device=device, precision=precision)
        with _progress_bar(not quiet) as progress:
            result = train_autoencoder(data, out_dir, settings, resume=resume, progress=progress,
                                       on_epoch=_epoch_line("validation PSNR"))
    _print_trained(result.to_dict(), "validation PSNR", json_out)


def _epoch_line(score: str) -> Callable[[Any], None]:
    """Per-epoch lines on stderr, above the progress bar."""

    def show(record: Any) -> None:
        loss = "" if record.epoch == 0 else f"loss {record.loss:.4f}, "
        err.print(f"epoch {record.epoch}: {loss}{score} {record.score:.4f} ({record.seconds:.1f} s)", highlight=False)

    return show


def _print_trained(result: dict[str, Any], score: str, json_out: bool) -> None:
    if json_out:
        print(json.dumps(result))
        return
    out.print(f"best {score} {result['best_score']:.4f} at epoch {result['best_epoch']} "
              f"(before training {result['initial_score']:.4f}), {result['epochs']} epochs in "
              f"{result['seconds']:.0f} s; checkpoint {result['out']}", highlight=False, markup=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
