"""Every command-line error is one line on stderr, a non-zero exit and no traceback:
usage errors (Click's, boxed or multi-line by default), the engine's RetrievalErrors
(a bad query image, a missing index or folder, however long the message), interruptions
and bugs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.engine import Engine

from .. import badimages as bi
from .conftest import invoke, one_error_line


def _squash(text: str) -> str:
    """Text with all whitespace removed, to compare paths across console line folds."""
    return "".join(text.split())


@pytest.mark.parametrize(("args", "expected"), [
    (["-k", "0"], "-k"),
    (["-k", "-1"], "-k"),
    (["-k", "1000000000"], "k must be an integer from 1 to"),  # past Typer: the engine's MAX_K
    (["--bogus"], "No such option: --bogus"),
    (["--where", "novalue"], "expected KEY=VALUE"),
    (["--since", "yesterday"], "'yesterday' is not a date"),
    (["--json", "--null"], "give --json or --null"),
    (["--id", "424242"], "424242"),
    (["--weights", "/nonexistent/w.pth"], "does not exist"),
])
def test_query_errors(small_bundle: Path, args: list[str], expected: str) -> None:
    line = one_error_line(invoke("query", "--id", "1", "-i", str(small_bundle), *args))
    assert expected in line
    if "Invalid value" in line or "No such option" in line:  # Click's usage errors say where help is
        assert line.endswith("(see retrieve query --help)")


def test_backend_parameter_of_a_wrong_type(small_bundle: Path, sample_dir: Path, tmp_path: Path) -> None:
    line = one_error_line(invoke("reindex", "--backend", "hnsw", "--param", "M=abc", "-i", str(small_bundle)))
    assert "M='abc'" in line
    new = tmp_path / "new"
    line = one_error_line(invoke("index", str(sample_dir / "cup"), "-i", str(new), "--backend", "hnsw",
                                 "--param", "M=abc", "-q"))
    assert "M='abc'" in line and not new.exists()  # checked before anything is written


def test_weights_of_a_bad_file(small_bundle: Path, sample_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a weights file\n")
    unindexed = str(sorted((sample_dir / "dolphin").iterdir())[0])  # must be embedded: the model is built
    line = one_error_line(invoke("query", unindexed, "--weights", str(bad), "-i", str(small_bundle)))
    assert str(bad) in line
    line = one_error_line(invoke("index", str(sample_dir / "cup"), "--weights", str(bad), "-i",
                                 str(tmp_path / "new"), "-q", "--device", "cpu"))
    assert str(bad) in line


def test_extractor_replaces_the_config_options(small_bundle: Path, sample_dir: Path) -> None:
    line = one_error_line(invoke("index", str(sample_dir / "cup"), "--extractor", "resnet18", "--pooling", "avg",
                                 "-i", str(small_bundle)))
    assert "--pooling" in line


@pytest.mark.parametrize(("args", "expected"), [
    ([], "Missing command"),
    (["nosuchcommand"], "No such command"),
    (["index"], "Missing argument 'FOLDER'"),
    (["train", "triplet"], "Missing argument 'DATA'"),
    (["tag", "1"], "give --add TAG"),
    (["eval", "--queries", "q.txt"], "--gallery"),
])
def test_usage_errors(args: list[str], expected: str) -> None:
    assert expected in one_error_line(invoke(*args))


def test_the_console_script_prints_one_line(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "retrieval.cli", "query", "--id", "1", "-k", "0", "-i",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: Invalid value for '-k'")


def test_an_error_message_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "two\nlines"
    line = one_error_line(invoke("info", "-i", str(missing)))
    assert "two\\nlines" in line


def test_a_bug_is_one_line_exit_1_and_its_traceback_is_shown_with_vv(monkeypatch: pytest.MonkeyPatch,
                                                                     small_bundle: Path) -> None:
    def boom(*_: object, **__: object) -> Engine:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(Engine, "open", boom)
    line = one_error_line(invoke("info", "-i", str(small_bundle)), code=1)
    assert line == "error: internal error: ZeroDivisionError: boom (run with -vv for the traceback)"
    verbose = invoke("-vv", "info", "-i", str(small_bundle))
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr and "ZeroDivisionError" in verbose.stderr


def test_an_interruption_exits_130_with_a_hint(monkeypatch: pytest.MonkeyPatch, small_bundle: Path) -> None:
    def interrupt(*_: object, **__: object) -> Engine:
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "open", interrupt)
    assert "run the same command again" in one_error_line(invoke("info", "-i", str(small_bundle)), code=130)


def test_usage_errors_exit_2_with_one_line(small_bundle: Path) -> None:
    assert one_error_line(invoke("query", "-i", str(small_bundle))).startswith("error: ")  # no image, no --id
    assert "KEY=VALUE" in one_error_line(invoke("query", "--id", "1", "--where", "novalue", "-i", str(small_bundle)))
    assert "424242" in one_error_line(invoke("query", "--id", "424242", "-i", str(small_bundle)))


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", ["corrupt", "truncated_jpeg", "zero_byte", "non_image", "missing", "folder",
                                  "combined"])
def test_cli_bad_query_image_is_one_line_and_exit_2(tiny_bundle: Path, bad_dir: Path, tmp_path: Path,
                                                    kind: str) -> None:
    if kind == "missing":
        args, reason = [str(tmp_path / "missing.jpg")], "file not found"
    elif kind == "folder":
        (tmp_path / "a folder").mkdir()
        args, reason = [str(tmp_path / "a folder")], "is a folder"
    elif kind == "combined":  # an indexed image and a bad one
        indexed = tmp_path / "indexed" / bi.sample_photos(1)[0].name
        assert indexed.is_file()
        args, reason = [str(indexed), str(bi.undecodable(bad_dir, "corrupt"))], "not a recognised image format"
    else:
        args, reason = [str(bi.undecodable(bad_dir, kind))], bi.UNDECODABLE[kind][2]
    assert reason in one_error_line(invoke("query", *args, "-i", str(tiny_bundle)))


@pytest.mark.parametrize("command", [["query", "x.jpg"], ["info"], ["remove", "1"], ["info", "--json"]])
def test_cli_missing_index_is_an_error_exit_2(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nonexistent"
    line = one_error_line(invoke(*command, "-i", str(missing)))
    assert "no index at" in line and _squash(str(missing)) in _squash(line)
    assert not missing.exists(), "looking for an index must not create one"


def test_cli_index_missing_folder_is_an_error_exit_2(tiny_bundle: Path, tmp_path: Path) -> None:
    line = one_error_line(invoke("index", str(tmp_path / "gone"), "-i", str(tiny_bundle), "-q"))
    assert "folder not found" in line


def test_cli_long_error_messages_stay_on_one_line(tiny_bundle: Path, bad_dir: Path, tmp_path: Path) -> None:
    """one_error_line checks that each message, ~1200 characters here, is one line."""
    deep = tmp_path.joinpath(*["a-rather-long-folder-name-for-an-index"] * 30)
    for args, expected in ((["info", "-i", str(deep)], str(deep)),
                           (["query", "x.jpg", "-i", str(deep)], str(deep)),
                           (["query", str(bi.undecodable(bad_dir, "bomb_header")), "-i", str(tiny_bundle)],
                            "decompression bomb")):
        assert expected in one_error_line(invoke(*args))


def test_cli_error_shows_paths_with_brackets_verbatim(tmp_path: Path) -> None:
    for name in ("old [draft] index", "index [/old]"):
        missing = tmp_path / name
        line = one_error_line(invoke("info", "-i", str(missing)))
        assert " ".join(str(missing).split()) in " ".join(line.split())
