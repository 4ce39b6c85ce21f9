"""`retrieve`: the command line over :class:`retrieval.Engine`.

This module builds the Typer app from the command modules; nothing here (nor there, at
import time) loads torch, FAISS or a model, so help and ``--version`` answer at once.
A user error prints one line on stderr and exits with 2 (see :class:`RetrieveGroup`).
"""

from typing import Annotated

import typer

from .. import __version__
from . import dupes, evaluate, export, indexing, manage, meta, search, serve, train, vectors
from .common import ESCAPING, GROUP_SETTINGS, RetrieveGroup, set_verbosity

# Only the root offers --install-completion and --show-completion (Click completes every
# subcommand and option from there); shellingham detects the shell when they are used.
app = typer.Typer(name="retrieve", cls=RetrieveGroup, **{**GROUP_SETTINGS, "add_completion": True})


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"retrieve {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, show_default=False, help="Log what the engine does: -v info, -vv debug (and tracebacks of bugs).")]
    = 0,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print the version and exit.")] = False,
) -> None:
    """Content-based image retrieval: index folders of images, find similar ones.

    The index is the one named default, in the data folder ($RETRIEVE_HOME, else the
    platform's per-user data folder), unless --index-dir (or RETRIEVE_INDEX_DIR) names
    another or gives a folder path. Results go to stdout, progress and errors to stderr.
    """
    set_verbosity(ctx, verbose)


app.command("index")(indexing.index)
app.command("query", epilog=ESCAPING)(search.query)
app.command("info")(manage.info)
app.command("indexes")(manage.indexes)
app.command("remove")(manage.remove)
app.command("meta")(meta.meta)
app.command("reindex")(indexing.reindex)
app.command("tag")(manage.tag)
app.command("dupes", epilog=ESCAPING)(dupes.dupes)
app.command("eval")(evaluate.evaluate)
app.command("export")(export.export)
app.command("export-vectors")(vectors.export_vectors)
app.command("serve")(serve.serve)
app.add_typer(train.app, name="train")


def main() -> None:
    """Console-script entry point (``retrieve``)."""
    app()
