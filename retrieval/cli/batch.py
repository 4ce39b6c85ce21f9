"""``retrieve query --batch``: many queries in one run, one result list each, as JSON lines
or CSV.

The queries are embedded together, a chunk at a time, through :meth:`Engine.search_many`
(one forward pass a chunk). That call answers all of a chunk or none, so a chunk with a bad
query is split in halves until the bad one stands alone: it gets an error entry, the
others their results, at the cost of a few more passes for that chunk only.
"""

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadQueryError, RetrievalError
from .common import image_refs

if TYPE_CHECKING:
    from ..options import Progress
    from ..query import Hit

__all__ = ["BATCH_FORMATS", "Answer", "answer_all", "read_queries", "write_answer", "write_csv_header"]

BATCH_FORMATS = ("jsonl", "csv")
CSV_HEADER = ("query", "rank", "id", "score", "path", "error")

QueryRef = int | str  # an indexed id or an image path, as the command line writes them
Search = Callable[[list[QueryRef]], "list[list[Hit]]"]


@dataclass(frozen=True)
class Answer:
    """One query's outcome: its hits, or why it could not be answered."""

    query: QueryRef
    hits: "list[Hit] | None"
    error: str | None = None


def read_queries(source: str) -> list[QueryRef]:
    """The queries `source` names: each image below a folder (as `index` finds them), or
    one per line of a text file, or of stdin for "-". A line of digits is an indexed id,
    any other a path (relative to the current folder); blank lines are passed over.

    Raises:
        BadQueryError: no such folder or file, an image file (one query, not a batch), or no query.
    """
    if source == "-":
        return _refs(sys.stdin.buffer.read(), "stdin")
    path = Path(source)
    if path.is_dir():
        from ..images.files import discover

        queries: list[QueryRef] = [str(p) for p in discover([path], on_skip=lambda _path, _reason: None)]
        if not queries:
            raise BadQueryError(f"--batch: no image in the folder {path.absolute()}")
        return queries
    from ..images.files import is_image_path

    if is_image_path(path):
        raise BadQueryError(f"--batch takes a folder or a list of queries, not the image {source} "
                            "(to query with it alone: retrieve query IMAGE)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadQueryError(f"--batch: cannot read {path.absolute()}: {e.strerror or e}") from None
    return _refs(data, str(path))


def _refs(data: bytes, where: str) -> list[QueryRef]:
    """The non-blank lines of a list as query references; the bytes of a path that is not
    UTF-8 are kept (surrogateescape), as the file system holds them."""
    lines = [line.rstrip("\r") for line in data.decode("utf-8", "surrogateescape").split("\n")]
    refs = image_refs([line for line in lines if line.strip()])
    if not refs:
        raise BadQueryError(f"--batch: no query in {where}")
    return refs


def answer_all(search: Search, queries: Sequence[QueryRef], chunk: int,
               progress: "Progress | None" = None) -> Iterator[Answer]:
    """Each query's answer, in order, `chunk` queries per search (reported to `progress`
    as phase "queries")."""
    for start in range(0, len(queries), chunk):
        yield from _answer(search, list(queries[start:start + chunk]))
        if progress is not None:
            progress("queries", min(start + chunk, len(queries)), len(queries))


def _answer(search: Search, part: list[QueryRef]) -> list[Answer]:
    """The answers of a chunk; split in halves where a query in it fails."""
    try:
        return [Answer(q, hits) for q, hits in zip(part, search(part))]
    except RetrievalError as e:
        if len(part) == 1:
            return [Answer(part[0], None, str(e))]
        middle = len(part) // 2
        return _answer(search, part[:middle]) + _answer(search, part[middle:])


def write_answer(answer: Answer, fmt: str, record: Callable[[int, "Hit"], dict[str, Any]]) -> None:
    """One answer on stdout, at once (a pipe sees each as it comes): a JSON line with the
    query and its results (`record` of each hit) or its error, or CSV rows, one per hit
    (one row with the error, or with empty fields when nothing matched)."""
    if fmt == "jsonl":
        value: dict[str, Any] = {"query": answer.query}
        if answer.hits is None:
            value["error"] = answer.error
        else:
            value["results"] = [record(rank, h) for rank, h in enumerate(answer.hits, 1)]
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()
        return
    rows = ([(answer.query, rank, h.id, f"{h.score:.6f}", h.path, "") for rank, h in enumerate(answer.hits, 1)]
            if answer.hits else [(answer.query, "", "", "", "", answer.error or "")])
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    _write_exact(text.getvalue())


def write_csv_header() -> None:
    """The CSV header line, before the first answer."""
    _write_exact(",".join(CSV_HEADER) + "\n")


def _write_exact(text: str) -> None:
    """Text on stdout with a path's non-UTF-8 bytes written back as they were (CSV quotes,
    not escapes: a path in it is exact)."""
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.flush()
