"""Every command-line error is one line on stderr, a non-zero exit and no traceback:
usage errors (Click's, boxed or multi-line by default), the engine's RetrievalErrors,
interruptions and bugs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.engine import Engine

from .conftest import invoke, one_error_line


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
