"""Commands about an index's contents: ``info`` and ``tag``. Neither loads a model."""

from typing import Annotated, Any, Optional

import typer

from .common import DEFAULT_INDEX_DIR, ImageRefs, IndexDir, JsonOut, image_refs, json_or_line, print_json, print_line


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
