"""The ``query`` command: the images most like a photo, an indexed id or a vector, as text,
JSON, paths, inline pictures or a contact sheet; or, with --batch, many queries at once."""

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..options import EngineOptions
from .common import (
    DEFAULT_INDEX_DIR, RUN_DEFAULTS, Denoise, Device, Extractor, IndexDir, JsonOut, NullOut, Precision, Quiet,
    Runtime, Similarity, Weights, extractor_spec, note, print_json, print_line, print_null, print_rows,
    progress_bar, parse_pairs, parse_size, similarity_threshold,
)

if TYPE_CHECKING:
    from ..engine import Engine
    from ..filters import Filter
    from ..query import Hit

PREVIEW_SIZE = 128  # thumbnail side drawn inline: about six text rows


def query(
    images: Annotated[Optional[list[Path]], typer.Argument(metavar="IMAGE", hidden=True)] = None,
    ids: Annotated[Optional[list[int]], typer.Option(
        "--id", metavar="ID", help="An indexed image to query with (repeatable; it is left out of the results).")]
    = None,
    k: Annotated[int, typer.Option("-k", min=1, metavar="N", help="How many results.")] = 10,
    where: Annotated[Optional[list[str]], typer.Option(
        metavar="KEY=VALUE", help="Only images whose metadata KEY is VALUE (repeatable).")] = None,
    path: Annotated[Optional[str], typer.Option(metavar="GLOB", help="Only paths matching this glob, e.g. '*/2024/*'.")]
    = None,
    folder: Annotated[Optional[list[Path]], typer.Option(
        resolve_path=True, metavar="DIR", help="Only images below this folder (repeatable: any).")] = None,
    file_type: Annotated[Optional[list[str]], typer.Option(
        "--type", metavar="FORMAT", help="Only this format, e.g. jpeg or png (repeatable: any).")] = None,
    min_size: Annotated[Optional[int], typer.Option(
        parser=parse_size, metavar="SIZE", help="Only files of at least this size (bytes, or 50k, 2M, ...).")] = None,
    max_size: Annotated[Optional[int], typer.Option(
        parser=parse_size, metavar="SIZE", help="Only files of at most this size.")] = None,
    since: Annotated[Optional[str], typer.Option(
        metavar="DATE", help="Only files modified on or after this date (YYYY-MM-DD[THH:MM]).")] = None,
    until: Annotated[Optional[str], typer.Option(
        metavar="DATE", help="Only files modified on or before this date.")] = None,
    tag: Annotated[Optional[list[str]], typer.Option(metavar="TAG", help="Only images with this tag (repeatable: all).")]
    = None,
    taken_since: Annotated[Optional[str], typer.Option(
        metavar="DATE", help="Only photos taken on or after this date, by the camera's clock (EXIF).")] = None,
    taken_until: Annotated[Optional[str], typer.Option(
        metavar="DATE", help="Only photos taken on or before this date (a bare date includes the day).")] = None,
    camera: Annotated[Optional[str], typer.Option(
        metavar="TEXT", help="Only photos whose camera make and model contain this, any case (EXIF).")] = None,
    near: Annotated[Optional[str], typer.Option(
        metavar="LAT,LON,KM", help="Only photos taken within KM of this point (EXIF GPS).")] = None,
    dedup: Annotated[bool, typer.Option("--dedup", help="Fold copies and near-copies into the best-ranked one.")]
    = False,
    dedup_threshold: Similarity = None,
    rerank: Annotated[Optional[bool], typer.Option(
        "--rerank/--no-rerank", show_default="on when the index keeps local features",
        help="Find the same object first: verify a short list with local features.")] = None,
    weights: Weights = None,
    extractor: Extractor = None,
    denoise: Denoise = None,
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    device: Device = RUN_DEFAULTS.device,
    precision: Precision = RUN_DEFAULTS.precision,
    runtime: Runtime = RUN_DEFAULTS.runtime,
    json_out: JsonOut = False,
    null: NullOut = False,
    paths: Annotated[bool, typer.Option(
        "--paths", help="Print only the paths, one a line (escaped as text output is), for pipes.")] = False,
    preview: Annotated[Optional[bool], typer.Option(
        "--preview/--no-preview", show_default="on when stdout is a terminal that shows images",
        help="Draw each result's thumbnail above its line (kitty, iTerm2 or sixel; RETRIEVE_PREVIEW=kitty|iterm|"
             "sixel|none overrides the guess from TERM).")] = None,
    sheet: Annotated[Optional[Path], typer.Option(
        dir_okay=False, metavar="FILE.html|FILE.jpg",
        help="Also write a contact sheet of the query and its results: a self-contained HTML page, or a JPEG "
             "grid.")] = None,
    open_sheet: Annotated[bool, typer.Option(
        "--open", help="Open the --sheet in the desktop's viewer (a browser for HTML).")] = False,
    batch: Annotated[Optional[str], typer.Option(
        metavar="DIR|LIST|-",
        help="Many queries, one result list each: the images below a folder, or a text file (- for stdin) "
             "of paths and ids, one a line. Exits with 2 when any failed (each has an error entry).")] = None,
    batch_format: Annotated[Optional[str], typer.Option(
        "--format", metavar="jsonl|csv", show_default="jsonl",
        help="--batch output: JSON lines (one a query) or CSV (one row a result).")] = None,
    quiet: Quiet = False,
) -> None:
    """Find the indexed images most similar to the query.

    The query is one or more image files (IMAGE) and indexed images (--id), combined
    into one; indexed ones are left out of the results. With --batch, each query of a
    folder or list is answered on its own.

    Text output is rank, score, id and path (and, re-ranked, the inliers that verify each
    result; with --dedup, how many copies each result folds): a table on a terminal,
    tab-separated lines under a header otherwise. The timing line on stderr gives the
    model load, the search and the whole command's time.
    --dedup-threshold implies --dedup.
    """
    from ..engine import Engine
    from ..filters import Filter, parse_date, parse_near, parse_taken

    started = time.perf_counter() - _process_age()
    _check_outputs(json_out, null, paths, preview, sheet, open_sheet, batch, batch_format,
                   len(images or ()) + len(ids or ()), k)
    where_filter = Filter(
        path_glob=path, folders=tuple(str(f) for f in folder or ()), formats=tuple(file_type or ()),
        min_bytes=min_size, max_bytes=max_size, since=parse_date(since) if since else None,
        until=parse_date(until) if until else None, tags=tuple(tag or ()), metadata=parse_pairs(where, "--where"),
        taken_since=parse_taken(taken_since) if taken_since else None,
        taken_until=parse_taken(taken_until, end_of_day=True) if taken_until else None, camera=camera,
        near=parse_near(near) if near else None)
    options = EngineOptions(device=device, precision=precision, runtime=runtime, denoise=denoise, denoise_at="query")
    spec = extractor_spec(extractor, weights=str(weights) if weights else None)
    dedup_at = similarity_threshold(dedup_threshold) if dedup or dedup_threshold is not None else None
    if batch is not None:
        from .batch import read_queries

        queries = read_queries(batch)  # before the model loads: a wrong list fails at once
        with Engine.open(index_dir, options=options, extractor=spec) as engine:
            _run_batch(engine, queries, k, where_filter, dedup_at, rerank,
                       "csv" if batch_format == "csv" else "jsonl", quiet, started)
        return
    protocol = _preview_protocol(preview) if not (json_out or null or paths) else None
    query_items: list[int | str] = [*map(str, images or ()), *(ids or ())]
    with Engine.open(index_dir, options=options, extractor=spec) as engine:
        search_start = time.perf_counter()
        hits = engine.search(query_items, k=k, where=where_filter, dedup=dedup_at, rerank=rerank)
        search_s = time.perf_counter() - search_start - engine.load_seconds
        timing = {"model_load_s": engine.load_seconds, "query_s": search_s}
        if json_out:
            _print_json(hits, timing, started)
        elif null:
            print_null([h.path for h in hits])
        elif paths:
            for h in hits:
                print_line(h.path)
        elif protocol is not None:
            _print_preview(engine, hits, dedup_at is not None, protocol)
        else:
            print_rows(*_rows(hits, dedup_at is not None))
        if sheet is not None:
            _write_query_sheet(engine, query_items, hits, sheet, open_sheet)
    note(f"model load {timing['model_load_s']:.2f} s, query {search_s * 1000:.1f} ms, "
         f"total {time.perf_counter() - started:.2f} s")


def _process_age() -> float:
    """Seconds since this process started (Linux: from /proc, so the interpreter's start
    and the imports count, as the user waited for them); 0 where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # after "pid (name)", which may hold spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: start, in ticks after boot
    except (OSError, ValueError, IndexError):
        return 0.0


def _check_outputs(json_out: bool, null: bool, paths: bool, preview: bool | None, sheet: Path | None,
                   open_sheet: bool, batch: str | None, batch_format: str | None, query_count: int, k: int) -> None:
    """Refuse options that contradict each other, before anything is loaded."""
    chosen = [name for name, on in (("--json", json_out), ("--null", null), ("--paths", paths)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter(f"give {' or '.join(chosen)}, not {'both' if len(chosen) == 2 else 'several'}: "
                                 "each is a whole format", param_hint=f"'{chosen[-1]}'")
    if preview and chosen:
        raise typer.BadParameter(f"it draws the text results: not with {chosen[0]}", param_hint="'--preview'")
    if open_sheet and sheet is None:
        raise typer.BadParameter("it opens the --sheet: give --sheet FILE.html or FILE.jpg", param_hint="'--open'")
    if sheet is not None and batch is None:
        from ..sheets import check_sheet

        check_sheet(sheet, [query_count, k])  # a wrong suffix, or too many for a JPEG: before the model loads
    if batch_format is not None and batch_format not in ("jsonl", "csv"):
        raise typer.BadParameter(f"{batch_format!r}: expected jsonl or csv", param_hint="'--format'")
    if batch is None:
        if batch_format is not None:
            raise typer.BadParameter("it formats --batch output", param_hint="'--format'")
        if not query_count:
            raise typer.BadParameter("give an IMAGE, an --id or --batch", param_hint="'IMAGE'")
        return
    if query_count:
        raise typer.BadParameter("give IMAGE and --id arguments or --batch, not both", param_hint="'--batch'")
    extra = [name for name, on in (("--null", null), ("--paths", paths), ("--preview", preview), ("--sheet", sheet),
                                   ("--json and --format csv", json_out and batch_format == "csv")) if on]
    if extra:
        raise typer.BadParameter(f"--batch writes JSON lines or CSV: not with {extra[0]}", param_hint="'--batch'")


def hit_record(rank: int, h: "Hit") -> dict[str, Any]:
    """A hit as JSON output gives it (one result of --json, of each --batch line)."""
    return {"rank": rank, "id": h.id, "score": round(h.score, 6), "path": h.path, "metadata": h.metadata,
            "duplicates": list(h.duplicates), "inliers": h.inliers,
            "region": [list(p) for p in h.region] if h.region else None,
            "photo": h.photo.to_dict() if h.photo else None}


def _print_json(hits: "list[Hit]", timing: dict[str, float], started: float) -> None:
    print_json({"results": [hit_record(rank, h) for rank, h in enumerate(hits, 1)],
                "timing": {**{key: round(value, 4) for key, value in timing.items()},
                           "total_s": round(time.perf_counter() - started, 4)}})


def _rows(hits: "list[Hit]", dedup: bool) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The text output: a header and one row a hit (the inliers column when re-ranked,
    the copies column with --dedup)."""
    header = ["rank", "score", "id", "path"]
    rows = [[str(rank), f"{h.score:.4f}", str(h.id), h.path] for rank, h in enumerate(hits, 1)]
    if any(h.inliers is not None for h in hits):  # re-ranked: matches that verify each hit
        header.append("inliers")
        rows = [[*r, "-" if h.inliers is None else str(h.inliers)] for r, h in zip(rows, hits)]
    if dedup:  # how many copies each hit stands for
        header.append("copies")
        rows = [[*r, str(len(h.duplicates))] for r, h in zip(rows, hits)]
    return tuple(header), [tuple(r) for r in rows]


def _preview_protocol(asked: bool | None) -> str | None:
    """The protocol to draw thumbnails with: none when --no-preview; by default, the
    terminal's, when stdout is one; with --preview, the terminal's or an error."""
    from .terminal import PREVIEW_ENV, detect

    if asked is False or (asked is None and not sys.stdout.isatty()):
        return None
    protocol = detect()
    if protocol is None and asked:
        raise typer.BadParameter(f"this terminal shows no images that can be told from its environment: set "
                                 f"{PREVIEW_ENV}=kitty, iterm or sixel", param_hint="'--preview'")
    return protocol


def _print_preview(engine: "Engine", hits: "list[Hit]", dedup: bool, protocol: str) -> None:
    """Each hit's thumbnail drawn inline, its text row (fields apart by two spaces) below;
    a hit whose file cannot be shown just has its row."""
    from ..errors import BadImageError
    from .terminal import inline_image

    header, rows = _rows(hits, dedup)
    print_line("  ".join(header))
    for h, row in zip(hits, rows):
        try:
            picture = engine.thumbnail(h.id, PREVIEW_SIZE)
        except BadImageError:
            picture = None
        if picture is not None:
            sys.stdout.write(inline_image(picture.data, protocol) + "\n")
        print_line("  ".join(row))


def _write_query_sheet(engine: "Engine", query_items: list[int | str], hits: "list[Hit]", out: Path,
                       open_it: bool) -> None:
    """The sheet of one query: its images (files and indexed ids), then its results."""
    from ..sheets import SheetItem, write_sheet
    from .terminal import open_in_viewer

    infos = engine.image_infos([q for q in query_items if isinstance(q, int)])
    query = [SheetItem(None, q, "query") if isinstance(q, str) else SheetItem(q, infos[q].path, f"query, id {q}")
             for q in query_items]
    results = [SheetItem(h.id, h.path, f"{rank}. score {h.score:.4f}, id {h.id}") for rank, h in enumerate(hits, 1)]
    title = f"retrieve query {' '.join(map(str, query_items))}"
    write_sheet(engine, [("query", query), (f"{len(results)} results", results)], out, title)
    note(f"sheet written to {out.absolute()}")
    if open_it and not open_in_viewer(out):
        note(f"could not open a viewer: open {out.absolute()} yourself")


def _run_batch(engine: "Engine", queries: "list[int | str]", k: int, where: "Filter", dedup: float | None,
               rerank: bool | None, fmt: str, quiet: bool, started: float) -> None:
    """Answer each query on stdout as it comes; exit 2 at the end when any failed."""
    from .batch import answer_all, write_answer, write_csv_header

    engine.search_many([], k=k, where=where, rerank=rerank)  # bad k or rerank: one error, not one per query
    failed = 0
    search_start = time.perf_counter()
    if fmt == "csv":
        write_csv_header()
    with progress_bar(not quiet) as progress:
        answers = answer_all(lambda part: engine.search_many(part, k=k, where=where, dedup=dedup, rerank=rerank),
                             queries, engine.options.batch_size, progress)
        for answer in answers:
            failed += answer.hits is None
            write_answer(answer, fmt, hit_record)
    search_s = time.perf_counter() - search_start - engine.load_seconds
    note(f"{len(queries)} queries ({failed} failed), model load {engine.load_seconds:.2f} s, "
         f"search {search_s * 1000 / len(queries):.1f} ms a query, total {time.perf_counter() - started:.2f} s")
    if failed:
        raise typer.Exit(2)
