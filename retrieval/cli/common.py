"""What every command shares: option types, the error rules, progress, output.

This module and the command modules import nothing heavy at import time (no torch,
timm, faiss, annoy, model code): ``retrieve --help``, ``--version`` and every
subcommand's ``--help`` are answered from here, in a fraction of a second. Commands
import the engine inside their bodies. Nor do they postpone annotations (no ``from
__future__ import annotations``): Typer reads every command's annotations at each start,
and as strings each would be compiled and evaluated (3% of ``retrieve info``); names
imported for type checking only are quoted where used.

Output rules: results go to stdout, everything else (progress, warnings, errors) to
stderr. In text output a path is one field of one line: :func:`clean` escapes what
could break or forge a line. ``--json`` and ``--null`` give paths exactly.
"""

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from ..errors import RetrievalError
from ..options import DECODE_MODES, PRECISIONS, RUNTIMES, EngineOptions, Progress

if TYPE_CHECKING:
    from typer._click import Context as ClickContext  # what Click passes to invoke (typer vendors Click)

DEFAULT_INDEX_DIR = Path("default")  # the index named default, in the data folder
GROUP_SETTINGS: dict[str, Any] = {  # for every typer.Typer of the command line
    "rich_markup_mode": None,  # plain Click help: option types as their metavars, no boxes
    "pretty_exceptions_enable": False,
    "add_completion": False,
    "no_args_is_help": False,  # a missing command is a one-line usage error, as any other
    "context_settings": {"help_option_names": ["-h", "--help"], "max_content_width": 100},
}
RUN_DEFAULTS = EngineOptions()  # the engine's own defaults, shown by --help

ESCAPING = ("Text output writes a backslash, tab, newline and any other unprintable character in a path as "
            "\\\\, \\t, \\n, \\xHH or \\uHHHH, so each result is one line; --json and --null give paths exactly.")

# ---------------------------------------------------------------------- option types

def resolve_index_dir(value: Path | str) -> Path:
    """The --index-dir value, a name or a path, as the absolute folder it stands for (a
    parser, not a callback: it must see ``./work`` before pathlib drops the ``./``)."""
    from ..home import index_path

    try:
        return index_path(value)
    except RetrievalError as e:
        raise typer.BadParameter(str(e)) from None


IndexDir = Annotated[Path, typer.Option(
    "--index-dir", "-i", envvar="RETRIEVE_INDEX_DIR", metavar="NAME|DIR", parser=resolve_index_dir,
    help="The index: a name, kept in the data folder ($RETRIEVE_HOME, else the platform's per-user data "
         "folder; `retrieve indexes` lists them), or a folder path (with a / in it, e.g. ./work).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of text.")]
NullOut = Annotated[bool, typer.Option(
    "--null", "-0", help="Print only the paths, each ended by a NUL byte, exactly as stored (for xargs -0).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Device = Annotated[str, typer.Option(metavar="DEVICE", help="auto (a GPU when one is visible), cpu, cuda or cuda:N.")]
Precision = Annotated[str, typer.Option(
    metavar="NAME", help=f"Forward-pass precision: {', '.join(PRECISIONS)} (auto: bf16 on a GPU, fp32 on the CPU, "
                         "or what the index records; bf16 and int8 on the CPU are recorded by a new index, int8 "
                         "calibrated on its first images).")]
Runtime = Annotated[str, typer.Option(
    metavar="NAME", envvar="RETRIEVE_RUNTIME",
    help=f"What runs the network: {', '.join(RUNTIMES)} (auto: PyTorch on a GPU; on the CPU the fastest installed "
         "runtime whose vectors agree with PyTorch's, measured once). Every runtime gives the same index.")]
BatchSize = Annotated[int, typer.Option(min=1, metavar="N", help="Images per forward pass.")]
Workers = Annotated[Optional[int], typer.Option(
    min=0, metavar="N", show_default="CPU: one per core, at most 4; GPU: cores - 2, at most 16",
    help="Decode worker processes.")]
Decode = Annotated[str, typer.Option(metavar="WHERE", help=f"Where JPEGs are decoded: {', '.join(DECODE_MODES)} "
                                                           "(auto: on the GPU when the device is one).")]
Extractor = Annotated[Optional[str], typer.Option(
    "--extractor", metavar="PATH|NAME",
    help="Embed with a `retrieve train` checkpoint folder, or a backbone name (a wrong name lists them).")]
Weights = Annotated[Optional[Path], typer.Option(
    exists=True, dir_okay=False, resolve_path=True, metavar="FILE",
    help="A local file of the backbone's weights (for an existing index: the same weights, moved).")]
Denoise = Annotated[Optional[Path], typer.Option(
    exists=True, resolve_path=True, metavar="PATH",
    help="Denoising autoencoder checkpoint (`retrieve train autoencoder`): clean images before embedding them.")]
Backend = Annotated[Optional[str], typer.Option(
    metavar="NAME", show_default="auto for a new index, else its own",
    help="ANN backend: auto (chosen by collection size) or a backend name (a wrong name lists them).")]
BackendParams = Annotated[Optional[list[str]], typer.Option(
    "--param", metavar="KEY=VALUE", help="ANN backend parameter, e.g. M=32 (repeatable; a wrong key lists them).")]
ImageRefs = Annotated[list[str], typer.Argument(metavar="ITEM", hidden=True)]  # described by each docstring


def image_refs(items: Sequence[str]) -> list[int | str]:
    """Command-line image references: all digits is an indexed id, anything else a path
    (write ``./42`` for a file named 42)."""
    return [int(item) if item.isdigit() else item for item in items]


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i)?)?b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """A byte count as people write it: 50000, 50k, 2M, 1.5G, 300KB (powers of 1000, as
    file managers show sizes), or 64KiB (powers of 1024)."""
    found = _SIZE.fullmatch(text)
    if found is None:
        raise typer.BadParameter(f"{text!r} is not a size: give bytes, or a number with k, M, G or T (50k, 2M)")
    number, unit, binary = found.groups()
    power = "kmgt".index(unit.lower()) + 1 if unit else 0
    return int(Decimal(number) * (1024 if binary else 1000) ** power)  # Decimal: 1.005k is 1005, not 1004


ByteSize = Annotated[Optional[int], typer.Option(parser=parse_size, metavar="SIZE")]  # 50k, 2M: see parse_size


def parse_pairs(items: Sequence[str] | None, option: str) -> dict[str, Any]:
    """KEY=VALUE options. A value that parses as JSON (a number, true, null) is that
    value, anything else is text; the engine checks keys and values."""
    parsed: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=f"'{option}'")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def extractor_spec(extractor: str | None, **fields: Any) -> str | dict[str, Any] | None:
    """What embeds, as :meth:`Engine.create`/:meth:`Engine.open` take it: the --extractor
    name or path, else the given config fields (None: not given)."""
    given = sorted(name for name, value in fields.items() if value is not None)
    if extractor is not None and given:
        raise typer.BadParameter(f"it replaces {', '.join('--' + g.replace('_', '-') for g in given)}: "
                                 "give one or the others", param_hint="'--extractor'")
    return extractor if extractor is not None else {k: v for k, v in fields.items() if v is not None} or None


# ---------------------------------------------------------------------- errors


class RetrieveGroup(TyperGroup):
    """The root command: every error becomes one line on stderr and an exit code.

    2: a user error (a :class:`RetrievalError`, or a usage error such as a bad option);
    130: interrupted; 1: a bug, its traceback shown with ``-vv``.
    """

    def invoke(self, ctx: "ClickContext") -> Any:
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort, BrokenPipeError):
            raise  # usage errors and exits: handled by main; a closed pipe (| head): by Click
        except RetrievalError as e:
            error_line(str(e))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            error_line("interrupted: run the same command again to finish")
            raise typer.Exit(130) from None
        except Exception as e:  # a bug
            if ctx.meta.get(VERBOSITY, 0) >= 2:
                traceback.print_exc()
            error_line(f"internal error: {type(e).__name__}: {e} (run with -vv for the traceback)")
            raise typer.Exit(1) from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        """As Click's, but a usage error is one line (Click prints the usage and a hint)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except typer.TyperException as e:
            where = getattr(getattr(e, "ctx", None), "command_path", None)
            error_line(e.format_message().rstrip(".") + (f" (see {where} --help)" if where else ""))
            sys.exit(e.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


VERBOSITY = "retrieve.verbosity"  # key of the -v count in the root context's meta


def set_verbosity(ctx: typer.Context, verbose: int) -> None:
    """Log the library's warnings (Python's default), info (-v) or debug messages (-vv) to stderr."""
    ctx.meta[VERBOSITY] = verbose
    if sys.stderr.isatty():  # a person reading: rich's aligned, coloured lines
        from rich.console import Console
        from rich.logging import RichHandler

        logging.basicConfig(format="%(message)s", handlers=[RichHandler(
            console=Console(stderr=True), show_time=False, show_path=False, markup=False)])
    else:  # a log file or a pipe: one plain line a record
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("retrieval").setLevel(logging.INFO if verbose == 1 else logging.DEBUG)


def error_line(message: str) -> None:
    """`message` as one line on stderr, however many lines or escapes it holds."""
    typer.echo(f"error: {clean(message)}", err=True)


# ---------------------------------------------------------------------- output

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def clean(text: str) -> str:
    """`text` as one safe line: backslash, tab, newline, other unprintable characters
    (terminal escapes, bidi overrides) and undecodable bytes escaped (see ESCAPING).

    A file name may hold any of them; unescaped, one could forge result lines."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_char(c) for c in text)


def _escape_char(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by Python's surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def print_json(value: Any) -> None:
    """One JSON document on stdout (json.dumps escapes every control character)."""
    print(json.dumps(value))


def print_null(paths: Sequence[str]) -> None:
    """Each path's exact bytes, ended by NUL: the one byte a path cannot hold."""
    sys.stdout.flush()
    sys.stdout.buffer.write(b"".join(os.fsencode(p) + b"\0" for p in paths))
    sys.stdout.buffer.flush()


def print_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on a terminal, else tab-separated lines under a header line; every
    field escaped with :func:`clean`."""
    cells = [[clean(c) for c in row] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(*header)
        for row in cells:
            table.add_row(*map(Text, row))  # Text: a [bracket] in a path is not markup
        Console(soft_wrap=True).print(table)
    else:
        print("\n".join("\t".join(row) for row in [list(header), *cells]))


def print_line(text: str) -> None:
    """One line of text output, escaped."""
    print(clean(text))


def note(text: str) -> None:
    """One escaped line on stderr: timing, counts, skipped files."""
    typer.echo(clean(text), err=True)


def output_mode(json_out: bool, null: bool) -> None:
    """Refuse --json with --null: each is a whole format of its own."""
    if json_out and null:
        raise typer.BadParameter("give --json or --null, not both", param_hint="'--null'")


def report_failures(failures: Sequence[tuple[str, str]], what: str = "skipped", limit: int = 20) -> None:
    """The first files that could not be used, with their reasons, on stderr."""
    for path, reason in failures[:limit]:
        note(f"{what} {path}: {reason}")
    if len(failures) > limit:
        note(f"... and {len(failures) - limit} more")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress | None]:
    """A progress callback drawing one bar per phase on stderr, or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bars

    tasks: dict[str, Any] = {}
    bar = Bars(TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(), rate_column(),
               TimeRemainingColumn(), console=Console(stderr=True), transient=True)

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
        yield update


def json_or_line(value: Mapping[str, Any], json_out: bool, text: str) -> None:
    """`value` as JSON, or `text` as one line."""
    if json_out:
        print_json(value)
    else:
        print_line(text)


Similarity = Annotated[Optional[float], typer.Option(
    min=-1.0, max=1.0, metavar="COSINE", show_default="the engine's",
    help="Cosine similarity at or above which two images are copies.")]


def similarity_threshold(given: float | None) -> float:
    """The similarity asked for, or the engine's default (imported late: the CLI starts fast)."""
    from ..duplicates import DEFAULT_THRESHOLD

    return DEFAULT_THRESHOLD if given is None else given


def rate_column() -> Any:
    """A progress column with the phase's rate, items per second (rich's own speed column
    counts bytes)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.1f}/s" if speed else "-/s", style="progress.data.speed")

    return Rate()
