"""``retrieve meta``: what the index knows about an image, and user metadata set one image
at a time or in bulk from a CSV file (an app's SKU, price, in_stock...). Loads no model."""

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import RetrievalError
from .common import DEFAULT_INDEX_DIR, IndexDir, JsonOut, image_refs, json_or_line, parse_pairs, print_json, print_line

if TYPE_CHECKING:
    from ..catalog import Catalog, ImageRow

_KEYS = ("id", "path")  # the CSV columns that name the image; every other column is a metadata key


def meta(
    item: Annotated[Optional[str], typer.Argument(metavar="IMAGE_OR_ID", hidden=True)] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Set a metadata key (repeatable); VALUE is JSON if it parses "
                                           "(9.5, true, null), else text.")] = None,
    unset: Annotated[Optional[list[str]], typer.Option(metavar="KEY", help="Remove a metadata key (repeatable).")]
    = None,
    from_csv: Annotated[Optional[Path], typer.Option(
        "--from-csv", exists=True, dir_okay=False, metavar="FILE",
        help="Set metadata in bulk: a header row with an id or path column, then one column per key.")] = None,
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    json_out: JsonOut = False,
) -> None:
    """Show or set what the index knows about an image.

    IMAGE_OR_ID (an indexed path, or an id; write ./42 for a file named 42) alone shows
    its facts: size, pixels, format, what its EXIF said (taken, camera, lens, GPS) and its
    metadata. With --set/--unset it changes its metadata first. --from-csv sets the
    metadata of many images in one transaction: every row's image must be in the index
    (paths relative to the current folder), or nothing is written. Empty cells are left
    alone. `retrieve query --where KEY=VALUE` filters on the keys.
    """
    from ..engine import Engine

    if (item is None) == (from_csv is None):
        raise typer.BadParameter("give one IMAGE_OR_ID, or --from-csv FILE", param_hint="'IMAGE_OR_ID'")
    if from_csv is not None and (set_ or unset):
        raise typer.BadParameter("--set and --unset apply to one IMAGE_OR_ID; put bulk values in the CSV file",
                                 param_hint="'--from-csv'")
    with Engine.open(index_dir) as engine:
        if from_csv is not None:
            updates = _csv_updates(engine.catalog, from_csv)
            engine.update_metadata(updates)
            json_or_line({"updated": len(updates)}, json_out, f"updated {len(updates)}")
            return
        [image_id] = engine.catalog.resolve_ids(image_refs([item or ""]), strict=True)
        if set_ or unset:
            engine.update_metadata({image_id: parse_pairs(set_, "--set")}, unset or ())
        row = engine.catalog.rows_by_id([image_id])[image_id]
    facts = _facts(row)
    if json_out:
        print_json(facts)
        return
    for key, value in facts.items():
        if value is not None:
            print_line(f"{key:<13}{json.dumps(value) if isinstance(value, (dict, list)) else value}")


def _facts(row: "ImageRow") -> dict[str, Any]:
    """One image's row as the command shows it."""
    from ..catalog.facts import PhotoFacts

    return {"id": row.id, "path": row.path, "status": row.status, "error": row.error, "size": row.size,
            "width": row.width, "height": row.height, "format": row.format,
            **PhotoFacts.of_row(row).to_dict(), "metadata": dict(row.meta or {})}


def _csv_updates(catalog: "Catalog", path: Path) -> dict[int, dict[str, Any]]:
    """{image id: {key: value}} from a CSV file, every row's image resolved, or a
    RetrievalError naming the file and line of the first problem."""
    from ..catalog.metadata import KEY_PATTERN

    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        key = next((k for k in _KEYS if k in header), None)
        if key is None:
            raise RetrievalError(f"{path}: the header needs an id or a path column (found {', '.join(header) or '-'})")
        rows = [(reader.line_num, dict(r)) for r in reader]
    if bad := [k for k in header if k not in _KEYS and not KEY_PATTERN.fullmatch(k)]:
        raise RetrievalError(f"{path}: column {bad[0]!r} cannot be a metadata key: "
                             "name keys with letters, digits, _ and - only")
    refs = {line: (r.get(key) or "").strip() for line, r in rows}
    found = _resolve(catalog, key, set(refs.values()))
    updates: dict[int, dict[str, Any]] = {}
    for line, record in rows:
        ref = refs[line]
        if ref not in found:
            raise RetrievalError(f"{path} line {line}: not in the index: {ref or '(empty ' + key + ')'}")
        cells = [f"{k}={v}" for k, v in record.items() if k not in _KEYS and k is not None and v not in ("", None)]
        updates.setdefault(found[ref], {}).update(parse_pairs(cells, "--from-csv"))
    return updates


def _resolve(catalog: "Catalog", key: str, refs: set[str]) -> Mapping[str, int]:
    """CSV cells -> image ids: ids as ids, paths from the current folder; unknown ones absent."""
    if key == "id":
        ids = {ref: int(ref) for ref in refs if ref.isdigit()}
        known = catalog.rows_by_id(ids.values())
        return {ref: i for ref, i in ids.items() if i in known}
    paths = {ref: os.path.abspath(ref) for ref in refs if ref}
    rows = catalog.rows_by_path(paths.values())
    return {ref: rows[p].id for ref, p in paths.items() if p in rows}
