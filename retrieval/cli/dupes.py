"""The ``dupes`` command: groups of identical and near-identical images, and what to do
with them (keep one of each, move or trash the others)."""

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .common import (
    DEFAULT_INDEX_DIR, IndexDir, JsonOut, NullOut, Quiet, Similarity, note, output_mode, print_json, print_null,
    print_rows, progress_bar, report_failures, similarity_threshold,
)

if TYPE_CHECKING:
    from ..culling import SetAside
    from ..duplicates import Copy, DuplicateGroup
    from ..engine import Engine

KEEP_CHOICES = ("largest", "oldest", "newest", "path-order")  # retrieval.duplicates.KEEP_RULES, for --help
_UNITS = ("B", "kB", "MB", "GB", "TB")


def dupes(
    threshold: Similarity = None,
    exact: Annotated[bool, typer.Option("--exact", help="Identical files only (no model, no ANN search).")] = False,
    phash: Annotated[bool, typer.Option(
        "--phash", help="Confirm each group with a perceptual hash of the pixels: keeps resized and re-encoded "
                        "copies, splits off other shots of one scene (needs the phash extra).")] = False,
    keep: Annotated[str, typer.Option(
        metavar="RULE", help=f"Which file of each group to keep: {', '.join(KEEP_CHOICES)} (largest: most pixels, "
                             "then most bytes; oldest/newest: by date taken, else modified; ties: path order).")]
    = "largest",
    move_to: Annotated[Optional[Path], typer.Option(
        "--move-to", metavar="DIR", help="Move the other files of each group into DIR (with --apply).")] = None,
    trash: Annotated[bool, typer.Option(
        "--trash", help="Send the other files of each group to the desktop trash (with --apply).")] = False,
    apply: Annotated[bool, typer.Option(
        "--apply", help="Act: without it --move-to and --trash only say what they would do.")] = False,
    sheet: Annotated[Optional[Path], typer.Option(
        "--sheet", metavar="FILE", help="Also write a contact sheet of the groups, the file to keep marked "
                                        "(.html, or .jpg for a picture), before anything is moved.")] = None,
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    json_out: JsonOut = False,
    null: NullOut = False,
    quiet: Quiet = False,
) -> None:
    """List groups of identical and near-identical images; keep one of each, set the rest aside.

    Text output is one line per image: group number, id, the group's lowest similarity,
    path, size, pixels, date (taken, else modified) and what happens to it. With
    --move-to or --trash every file but the kept one is moved or trashed, once --apply is
    given, and taken out of the index (moved files stay out even inside an indexed
    folder; `retrieve remove --list` shows them). --sheet draws the groups for a person to
    check, best before --apply. With --null, each group's paths are
    followed by one more NUL (an empty record), as between the groups of jdupes -0.
    """
    from ..culling import set_aside
    from ..duplicates import confirm_by_phash, copies_of, keeper, require_imagehash
    from ..engine import Engine
    from ..sheets import sheet_format

    output_mode(json_out, null)
    if move_to is not None and trash:
        raise typer.BadParameter("give --move-to DIR or --trash, not both", param_hint="'--trash'")
    if apply and move_to is None and not trash:
        raise typer.BadParameter("there is nothing to apply without --move-to DIR or --trash", param_hint="'--apply'")
    if keep not in KEEP_CHOICES:
        raise typer.BadParameter(f"unknown rule {keep!r}; choose {', '.join(KEEP_CHOICES)}", param_hint="'--keep'")
    if sheet is not None:
        sheet_format(sheet)  # a wrong suffix fails before the search
    if phash and exact:
        raise typer.BadParameter("identical files need no perceptual hash: give --phash or --exact",
                                 param_hint="'--phash'")
    if phash:
        require_imagehash()  # before the search, not after it
    with Engine.open(index_dir) as engine:
        with progress_bar(not quiet and not exact) as progress:
            groups = engine.duplicates(None if exact else similarity_threshold(threshold), progress=progress)
        if phash:
            groups = confirm_by_phash(engine.catalog, groups)
        found = [(g, c) for g in groups if len(c := copies_of(engine.catalog, g)) > 1]  # less: removed meanwhile
        groups, described = [g for g, _ in found], [c for _, c in found]
        kept = [keeper(copies, keep) for copies in described]
        if sheet is not None:
            _write_sheet(engine, groups, described, kept, sheet)
        acting = move_to is not None or trash
        outcomes = set_aside(engine, [(k, [c for c in copies if c is not k]) for k, copies in zip(kept, described)],
                             move_to, apply) if acting else []
    fates = {s.copy.id: s for s in outcomes}
    _print_groups(groups, described, kept, fates, json_out, null)
    note(f"duplicate groups: {len(groups)}")
    if acting:
        _summary(outcomes, move_to, apply)


def _print_groups(groups: "list[DuplicateGroup]", described: "list[list[Copy]]", kept: "list[Copy]",
                  fates: "dict[int, SetAside]", json_out: bool, null: bool) -> None:
    if json_out:
        print_json([{"ids": list(g.ids), "paths": list(g.paths), "exact": g.exact, "score": g.score,
                     "keep": k.path, "files": [_file_json(c, c is k, fates.get(c.id)) for c in copies]}
                    for g, copies, k in zip(groups, described, kept)])
    elif null:
        print_null([p for g in groups for p in (*g.paths, "")])
    else:  # the first four columns as before --keep existed: scripts reading them go on working
        print_rows(("group", "id", "score", "path", "size", "pixels", "date", "action"),
                   [(str(n), str(c.id), "identical" if g.exact else f"{g.score:.4f}", c.path, _size(c.size),
                     _pixels(c), _date(c), _action(c is k, fates.get(c.id)))
                    for n, (g, copies, k) in enumerate(zip(groups, described, kept), 1) for c in copies])


def _write_sheet(engine: "Engine", groups: "list[DuplicateGroup]", described: "list[list[Copy]]",
                 kept: "list[Copy]", out: Path) -> None:
    """A contact sheet: one section per group, its files in path order, each captioned with
    what the text output's columns say of it."""
    from ..sheets import SheetItem, write_sheet

    sections = [(f"group {n}: {'identical' if g.exact else f'similarity {g.score:.4f}'}",
                 [SheetItem(c.id, c.path, " · ".join((
                     "keep" if c is k else "copy", _pixels(c), _size(c.size), _date(c)))) for c in copies])
                for n, (g, copies, k) in enumerate(zip(groups, described, kept), 1)]
    write_sheet(engine, sections, out, f"{len(groups)} duplicate groups in {engine.path}")
    note(f"sheet written to {out.absolute()}")


def _pixels(copy: "Copy") -> str:
    return f"{copy.width}x{copy.height}" if copy.width and copy.height else "?"


def _date(copy: "Copy") -> str:
    return f"{'taken' if copy.taken else 'modified'} {copy.date.isoformat(' ')}"


def _file_json(copy: "Copy", is_kept: bool, fate: "SetAside | None") -> dict[str, Any]:
    return {"id": copy.id, "path": copy.path, "size": copy.size, "width": copy.width, "height": copy.height,
            "date": copy.date.isoformat(), "date_taken": copy.taken, "keep": is_kept,
            **({"dest": fate.dest, "done": fate.done, "error": fate.error} if fate else {})}


def _action(is_kept: bool, fate: "SetAside | None") -> str:
    """What happens to one file, as the last column says it."""
    if is_kept:
        return "keep"
    if fate is None:
        return "copy"
    if fate.error:
        return f"left: {fate.error}"
    if fate.done:
        return f"moved to {fate.dest}" if fate.dest else "trashed"
    return f"would move to {fate.dest}" if fate.dest else "would trash"


def _summary(outcomes: "list[SetAside]", move_to: Path | None, apply: bool) -> None:
    """One line of what was (or would be) set aside, and the files left with their reasons."""
    ok = [s for s in outcomes if s.error is None]
    verb = (f"moved to {move_to}" if apply else f"would move to {move_to}") if move_to is not None \
        else ("trashed" if apply else "would trash")
    note(f"{verb}: {len(ok)} files, {_size(sum(s.copy.size for s in ok))}"
         + ("; removed from the index" if apply and ok else "")
         + ("" if apply else " (dry run: add --apply to act)"))
    report_failures([(s.copy.path, s.error) for s in outcomes if s.error], "left")


def _size(n: int) -> str:
    """Bytes the way file managers show them (decimal units)."""
    step = min(int(math.log10(max(n, 1)) // 3), len(_UNITS) - 1)
    return f"{n} B" if step == 0 else f"{n / 1000 ** step:.1f} {_UNITS[step]}"
