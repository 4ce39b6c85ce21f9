"""The ``query`` command: the images most like a photo, an indexed id or a vector."""

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..options import EngineOptions
from .common import (
    DEFAULT_INDEX_DIR, RUN_DEFAULTS, Denoise, Device, Extractor, IndexDir, JsonOut, NullOut, Precision,
    Runtime, Similarity, Weights, extractor_spec, note, output_mode, parse_pairs, print_json, print_null, print_rows,
    similarity_threshold,
)

if TYPE_CHECKING:
    from ..query import Hit

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
    min_size: Annotated[Optional[int], typer.Option(min=0, metavar="BYTES", help="Only files of at least this size.")]
    = None,
    max_size: Annotated[Optional[int], typer.Option(min=0, metavar="BYTES", help="Only files of at most this size.")]
    = None,
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
) -> None:
    """Find the indexed images most similar to the query.

    The query is one or more image files (IMAGE) and indexed images (--id), combined
    into one; indexed ones are left out of the results.

    Text output is rank, score, id and path (and, re-ranked, the inliers that verify each
    result; with --dedup, how many copies each result folds): a table on a terminal,
    tab-separated lines under a header otherwise.
    --dedup-threshold implies --dedup.
    """
    from ..engine import Engine
    from ..filters import Filter, parse_date, parse_near, parse_taken

    output_mode(json_out, null)
    where_filter = Filter(
        path_glob=path, folders=tuple(str(f) for f in folder or ()), formats=tuple(file_type or ()),
        min_bytes=min_size, max_bytes=max_size, since=parse_date(since) if since else None,
        until=parse_date(until) if until else None, tags=tuple(tag or ()), metadata=parse_pairs(where, "--where"),
        taken_since=parse_taken(taken_since) if taken_since else None,
        taken_until=parse_taken(taken_until, end_of_day=True) if taken_until else None, camera=camera,
        near=parse_near(near) if near else None)
    options = EngineOptions(device=device, precision=precision, runtime=runtime, denoise=denoise, denoise_at="query")
    spec = extractor_spec(extractor, weights=str(weights) if weights else None)
    dedup = dedup or dedup_threshold is not None
    with Engine.open(index_dir, options=options, extractor=spec) as engine:
        start = time.perf_counter()
        hits = engine.search([*map(str, images or ()), *(ids or ())], k=k, where=where_filter,
                             dedup=similarity_threshold(dedup_threshold) if dedup else None, rerank=rerank)
        elapsed = time.perf_counter() - start - engine.load_seconds
        load = engine.load_seconds
    _print_hits(hits, json_out, null, dedup, load, elapsed)


def _print_hits(hits: "list[Hit]", json_out: bool, null: bool, dedup: bool, load_s: float, query_s: float) -> None:
    if json_out:
        print_json({
            "results": [{"rank": rank, "id": h.id, "score": round(h.score, 6), "path": h.path, "metadata": h.metadata,
                         "duplicates": list(h.duplicates), "inliers": h.inliers,
                         "region": [list(p) for p in h.region] if h.region else None}
                        for rank, h in enumerate(hits, 1)],
            "timing": {"model_load_s": round(load_s, 4), "query_s": round(query_s, 4)},
        })
    elif null:
        print_null([h.path for h in hits])
    else:
        header = ["rank", "score", "id", "path"]
        rows = [[str(rank), f"{h.score:.4f}", str(h.id), h.path] for rank, h in enumerate(hits, 1)]
        if any(h.inliers is not None for h in hits):  # re-ranked: matches that verify each hit
            header.append("inliers")
            rows = [[*r, "-" if h.inliers is None else str(h.inliers)] for r, h in zip(rows, hits)]
        if dedup:  # how many copies each hit stands for
            header.append("copies")
            rows = [[*r, str(len(h.duplicates))] for r, h in zip(rows, hits)]
        print_rows(tuple(header), [tuple(r) for r in rows])
    note(f"model load {load_s:.2f} s, query {query_s * 1000:.1f} ms")
