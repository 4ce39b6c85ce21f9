"""Fixtures of the command-line tests: bundles built through the API (with the session's
warm extractor), and helpers that check what a command printed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from retrieval import Engine
from retrieval.cli.app import app

from .. import badimages

runner = CliRunner()


@pytest.fixture()
def small_bundle(make_engine: Callable[..., Engine], sample_dir: Path) -> Path:
    """A bundle of the sample's 5 cups and 5 chairs."""
    engine = make_engine()
    engine.index([sample_dir / "cup", sample_dir / "chair"])
    engine.close()
    return engine.path


@pytest.fixture()
def tiny_bundle(make_engine: Callable[..., Engine], tmp_path: Path) -> Path:
    """A bundle of 2 sample photos, copied to tmp_path/indexed."""
    root = tmp_path / "indexed"
    root.mkdir()
    for p in badimages.sample_photos(2):
        shutil.copyfile(p, root / p.name)
    engine = make_engine("bundle")
    engine.index([root])
    engine.close()
    return engine.path


@pytest.fixture()
def indexed(make_engine: Callable[..., Engine], sample_dir: Path) -> Path:
    """A bundle of all 50 sample photos."""
    engine = make_engine()
    engine.index([sample_dir])
    engine.close()
    return engine.path


def copy_as(source: Path, folder: Path, name: str) -> Path:
    """`source` copied into `folder` under `name` (any bytes but / and NUL)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, folder / name))


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def one_error_line(result: Result, code: int = 2) -> str:
    """The single stderr line of a failed command, after checking the rules: the exit
    code, nothing on stdout, no traceback, and no exception escaping the command (the
    command ended by exiting: the runner records that as SystemExit)."""
    assert code != 0, "an error line comes with a non-zero exit code"
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert result.stdout == "" and "Traceback" not in result.stderr
    return lines[0]
