"""Output that a file name cannot forge: text output escapes each path into one field
of one line; --null and --json give the exact paths."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import Engine
from retrieval.cli.common import clean, print_rows

from .conftest import copy_as, invoke

# A folder name that, printed raw in a path, adds the result line "1  0.9999  7  /etc/passwd.jpg".
FORGED = "evil\tname\n1\t0.9999\t7\t"


@pytest.mark.parametrize(("raw", "shown"), [
    ("/photos/cat.jpg", "/photos/cat.jpg"),
    ("/photos/café 写真.jpg", "/photos/café 写真.jpg"),  # printable Unicode stays as it is
    ("a\tb\nc\rd", "a\\tb\\nc\\rd"),
    ("back\\slash", "back\\\\slash"),
    ("\x1b[31mred", "\\x1b[31mred"),  # a terminal escape
    ("abc\u202edoc.exe", "abc\\u202edoc.exe"),  # a right-to-left override
    ("raw\udcffbyte", "raw\\xffbyte"),  # a byte that is not UTF-8, as os.fsdecode keeps it
])
def test_clean_escapes_what_could_break_a_line(raw: str, shown: str) -> None:
    assert clean(raw) == shown


def test_clean_keeps_distinct_names_distinct() -> None:
    """A literal backslash-t and a tab must not print the same."""
    names = ["a\tb", "a\\tb", "a\\\tb", "a\\\\tb", "a\nb", "a\\nb"]
    assert len({clean(n) for n in names}) == len(names)
    assert all(clean(n).isprintable() for n in names)


def test_terminal_table_escapes_and_shows_markup_literally(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    print_rows(("rank", "path"), [("1", "/a/[red]x[/red]\tb\nc.jpg"), ("2", "/b.jpg")])
    out = capsys.readouterr().out
    assert "/a/[red]x[/red]\\tb\\nc.jpg" in out  # rich markup not applied, control characters escaped
    first = [line for line in out.splitlines() if "[red]" in line]
    second = [line for line in out.splitlines() if "/b.jpg" in line]
    assert len(first) == len(second) == 1 and first != second  # one line per row, neither split nor merged


@pytest.fixture()
def forged(make_engine: Callable[..., Engine], sample_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bundle, the forged-path file, its exact copy): five images below `named/`, the
    forged one in FORGED/etc/, the query plain0.jpg."""
    photos = sorted((sample_dir / "cup").iterdir())
    folder = tmp_path / "named"
    evil = copy_as(photos[0], folder / FORGED / "etc", "passwd.jpg")
    for n, photo in enumerate(photos[1:4]):
        copy_as(photo, folder, f"plain{n}.jpg")
    copy = copy_as(photos[0], folder, "copy.jpg")
    engine = make_engine()
    engine.index([folder])
    engine.close()
    return engine.path, evil, copy


def test_query_text_output_escapes_a_forged_name(forged: tuple[Path, Path, Path]) -> None:
    bundle, evil, copy = forged
    result = invoke("query", str(copy.parent / "plain0.jpg"), "-k", "4", "-i", str(bundle))
    assert result.exit_code == 0, result.output
    lines = result.stdout_bytes.decode().split("\n")
    assert lines[-1] == "" and len(lines) == 1 + 4 + 1  # header, 4 results, final newline: no forged line
    assert all(len(line.split("\t")) == 4 for line in lines[:-1])
    paths = [line.split("\t")[3] for line in lines[1:-1]]
    assert clean(str(evil)) in paths and "/etc/passwd" not in result.stdout.replace(clean(str(evil)), "")
    assert "\\t7\\t/etc/passwd.jpg" in clean(str(evil))  # the forged line, escaped into the path


def test_query_null_and_json_give_exact_paths(forged: tuple[Path, Path, Path]) -> None:
    bundle, evil, copy = forged
    query = str(copy.parent / "plain0.jpg")
    null = invoke("query", query, "-k", "4", "-i", str(bundle), "-0")
    assert null.exit_code == 0, null.output
    records = null.stdout_bytes.split(b"\0")
    assert records[-1] == b"" and len(records) == 5
    assert str(evil).encode() in records[:-1] and all(Path(r.decode()).exists() for r in records[:-1])
    as_json = json.loads(invoke("query", query, "-k", "4", "-i", str(bundle), "--json").stdout)
    assert str(evil) in [r["path"] for r in as_json["results"]]


def test_dupes_text_and_null_output(forged: tuple[Path, Path, Path]) -> None:
    bundle, evil, copy = forged
    text = invoke("dupes", "--exact", "-i", str(bundle))
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["group", "id", "score", "path"]  # then the facts of each file
    assert sorted(line.split("\t")[3] for line in lines[1:]) == sorted([clean(str(copy)), clean(str(evil))])
    null = invoke("dupes", "--exact", "-i", str(bundle), "--null")
    assert null.exit_code == 0, null.output
    assert sorted(null.stdout_bytes.split(b"\0")) == sorted([str(copy).encode(), str(evil).encode(), b"", b""])
    assert null.stdout_bytes.endswith(b"\0\0")  # an empty record closes each group
