"""Commands about indexes and their contents: ``indexes``, ``info``, ``tag`` and ``remove``. None loads a model."""

from typing import Annotated, Any, Optional

import typer

from .common import (
    DEFAULT_INDEX_DIR, ImageRefs, IndexDir, JsonOut, image_refs, json_or_line, note, print_json, print_line, print_rows,
)


def info(index_dir: IndexDir = DEFAULT_INDEX_DIR, json_out: JsonOut = False) -> None:
    """Show what an index holds.

    Its image count, extractor, ANN backend, size on disk and failed files.
    """
    from ..engine import Engine

    with Engine.open(index_dir) as engine:
        facts = engine.info()
    if json_out:
        print_json(facts)
        return
    for line in _describe(facts):
        print_line(line)


def indexes(json_out: JsonOut = False) -> None:
    """List the named indexes in the data folder.

    One line each: name, images indexed, and folder. The data folder is $RETRIEVE_HOME,
    else the platform's per-user data folder; any other folder can still be an index
    (--index-dir ./path).
    """
    from ..catalog import Catalog
    from ..home import index_names, index_path, indexes_root
    from ..opening import CATALOG_FILE

    found = []
    for name in index_names():
        folder = index_path(name)
        catalog = Catalog(folder / CATALOG_FILE, read_only=True)
        try:
            found.append({"name": name, "count": catalog.counts()["ok"], "path": str(folder)})
        finally:
            catalog.close()
    if json_out:
        print_json({"data_folder": str(indexes_root()), "indexes": found})
        return
    print_rows(("name", "images", "path"), [(e["name"], str(e["count"]), e["path"]) for e in found])
    note(f"{len(found)} named indexes in {indexes_root()}")


def _describe(facts: dict[str, Any]) -> list[str]:
    """The text form of :meth:`Engine.info`: one labelled line per aspect, then the failed files."""
    ex, ann = facts["extractor"], facts["index"]
    pooling_params = ", ".join(f"{k}={v}" for k, v in ex["pooling_params"].items())
    return [
        f"index       {facts['path']}",
        f"images      {facts['count']} indexed, {facts['failed_count']} failed",
        f"extractor   {ex['kind']} {ex['backbone']}, {ex['pooling']} pooling"
        + (f" ({pooling_params})" if pooling_params else "") + f", {ex['image_size']} px {ex['resize']}"
        + (f", scales {', '.join(map(str, ex['scales']))}" if ex.get("scales", [1.0]) != [1.0] else ""),
        f"vectors     {facts['dim']}-d, {ex['normalisation']}-normalised, weights {ex['weights_digest'][:12]}",
        f"ann index   {ann['type']}" + (f" (now {ann['effective']})" if ann["type"] != ann["effective"] else "")
        + "".join(f", {k}={v}" for k, v in ann["params"].items() if v is not None)
        + (f", whitened to {w['dim']}-d (learned from {w['learned_from']} images)"
           if (w := ann.get("whitening")) and "dim" in w else ""),
        *([f"local       {local['name']}" + "".join(f", {k}={v}" for k, v in local["params"].items())]
          if (local := facts.get("local_features")) else []),
        f"on disk     {facts['size_bytes'] / 1e6:.2f} MB",
        *(f"  failed    {f['path']}: {f['error']}" for f in facts["failed"]),
    ]


def tag(
    items: ImageRefs,
    add: Annotated[Optional[list[str]], typer.Option(metavar="TAG", help="Tag to add (repeatable).")] = None,
    remove: Annotated[Optional[list[str]], typer.Option(metavar="TAG", help="Tag to remove (repeatable).")] = None,
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    json_out: JsonOut = False,
) -> None:
    """Add or remove tags; `retrieve query --tag` filters on them.

    Each ITEM is an indexed image's id or path (write ./42 for a file named 42).
    """
    from ..engine import Engine

    if not add and not remove:
        raise typer.BadParameter("give --add TAG and/or --remove TAG", param_hint="'--add'")
    with Engine.open(index_dir) as engine:
        changed = engine.tag(image_refs(items), add or (), remove or ())
    json_or_line({"changed": changed}, json_out, f"changed {changed}")


def remove(
    items: Annotated[Optional[list[str]], typer.Argument(metavar="ITEM", hidden=True)] = None,
    list_: Annotated[bool, typer.Option("--list", help="Print the exclusions in force, one a line.")] = False,
    undo: Annotated[Optional[list[str]], typer.Option(
        metavar="PATTERN", help="Stop excluding this pattern, path or folder: the next `retrieve index` adds its "
                                "images back (repeatable).")] = None,
    index_dir: IndexDir = DEFAULT_INDEX_DIR,
    json_out: JsonOut = False,
) -> None:
    """Remove images from the index for good (not the files).

    Each ITEM is an indexed image's id or path (write ./42 for a file named 42), a
    folder, or a shell-style pattern on paths ('*/drafts/*', quoted). What they name is
    removed now and recorded as an exclusion that every later `retrieve index` honours.
    An id or file path that is not in the index is an error, and nothing is removed then.
    """
    from ..engine import Engine
    from ..indexing.exclusions import pattern_for

    if not (items or list_ or undo):
        raise typer.BadParameter("give ITEMs to remove, --list or --undo PATTERN", param_hint="'ITEM'")
    with Engine.open(index_dir) as engine:
        removed, patterns, restored = 0, [], []
        if undo:  # as listed, or as typed: a path, folder or pattern from here
            current = engine.exclusions()
            wanted = [u if u in current else pattern_for(u) for u in undo]
            if missing := [u for u, w in zip(undo, wanted) if w not in current]:
                raise typer.BadParameter(f"{missing[0]!r} is not excluded (see retrieve remove --list)",
                                         param_hint="'--undo'")
            restored = engine.forget_exclusions(wanted)
        if items:
            removed, patterns = engine.exclude(image_refs(items))
        exclusions = engine.exclusions()
    if json_out:
        print_json({"removed": removed, "excluded": patterns, "restored": restored,
                    **({"exclusions": exclusions} if list_ else {})})
        return
    if items:
        print_line(f"removed {removed}; excluded from later runs: {', '.join(patterns)}")
    if restored:
        note(f"no longer excluded (the next `retrieve index` adds them back): {', '.join(restored)}")
    if list_:
        for pattern in exclusions:
            print_line(pattern)
