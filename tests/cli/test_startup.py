"""A fast command line: help, --version and the catalog-only commands must not import
torch, timm, FAISS, Annoy or the model code (seconds of start-up on a CPU box)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

import retrieval
from retrieval.cli.app import app

from .conftest import invoke

HEAVY = ("torch", "timm", "faiss", "annoy", "retrieval.engine", "retrieval.extractors")

# Runs `retrieve` with the arguments given as JSON lists in argv[1:], in this fresh
# process, then prints the heavy modules that got imported.
_PROBE = f"""
import json, sys
from typer.testing import CliRunner
from retrieval.cli.app import app
for args in map(json.loads, sys.argv[1:]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
"""


def _heavy_imports(*commands: list[str]) -> list[str]:
    run = subprocess.run([sys.executable, "-c", _PROBE, *map(json.dumps, commands)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _command_paths(command: typer.core.TyperGroup | typer.core.TyperCommand, path: list[str]) -> list[list[str]]:
    """Every command and group below `command`, as argument lists."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _command_paths(sub, [*path, name])
    return found


def test_help_of_every_command_and_version_import_nothing_heavy() -> None:
    commands = _command_paths(typer.main.get_command(app), [])
    assert ["train", "triplet"] in commands and ["query"] in commands  # the walk found the tree
    assert _heavy_imports(*([*c, "--help"] for c in commands), ["--version"]) == []


@pytest.mark.xfail(strict=True, reason="retrieval.engine imports torch and FAISS at module level; "
                                       "info and tag only need the catalog (see the CLI notes to the lead)")
def test_info_and_tag_import_nothing_heavy(small_bundle: Path, sample_dir: Path) -> None:
    cup = str(sorted((sample_dir / "cup").iterdir())[0])
    assert _heavy_imports(["info", "-i", str(small_bundle)], ["tag", cup, "--add", "x", "-i", str(small_bundle)]) == []


def test_version_is_the_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"retrieve {retrieval.__version__}\n"


def test_help_shows_plain_types_and_defaults() -> None:
    """Option values appear as metavars (N, DIR, KEY=VALUE), never as Python types."""
    for args in _command_paths(typer.main.get_command(app), []):
        text = invoke(*args, "--help").stdout
        assert "<" not in text.replace("<=", ""), (args, text)  # no <list[Path]>, <int>, <bool>
    query = " ".join(invoke("query", "--help").stdout.split())
    assert "-k N How many results. [default: 10; x>=1]" in query
    assert "-i, --index-dir DIR" in query and "default: indexes/default" in query
    assert "-0, --null" in query and "\\t" in query  # the escaping rule is documented
