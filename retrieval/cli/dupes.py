"""The ``dupes`` command: groups of identical and near-identical images."""

from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    DEFAULT_INDEX_DIR, IndexDir, JsonOut, NullOut, Quiet, Similarity, note, output_mode, print_json, print_null,
    print_rows, progress_bar, similarity_threshold,
)

if TYPE_CHECKING:
    from ..duplicates import DuplicateGroup


def dupes(
    threshold: Similarity = None,
    exact: Annotated[bool, typer.Option("--exact", help="Identical files only (no model, no ANN search).")] = False,
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    json_out: JsonOut = False,
    null: NullOut = False,
    quiet: Quiet = False,
) -> None:
    """List groups of identical and near-identical images.

    Text output is one line per image: group number, id, the group's lowest similarity
    and path. With --null, each group's paths are followed by one more NUL (an empty
    record), as between the groups of jdupes -0.
    """
    from ..engine import Engine

    output_mode(json_out, null)
    with Engine.open(index_dir) as engine, progress_bar(not quiet and not exact) as progress:
        groups = engine.duplicates(None if exact else similarity_threshold(threshold), progress=progress)
    _print_groups(groups, json_out, null)
    note(f"duplicate groups: {len(groups)}")


def _print_groups(groups: "list[DuplicateGroup]", json_out: bool, null: bool) -> None:
    if json_out:
        print_json([{"ids": list(g.ids), "paths": list(g.paths), "exact": g.exact, "score": g.score}
                    for g in groups])
    elif null:
        print_null([p for g in groups for p in (*g.paths, "")])
    else:
        print_rows(("group", "id", "score", "path"),
                   [(str(n), str(i), "identical" if g.exact else f"{g.score:.4f}", p)
                    for n, g in enumerate(groups, 1) for i, p in zip(g.ids, g.paths)])
