"""A fast command line: help, --version and the catalog-only commands must not import
torch, timm, FAISS, Annoy, Pillow or the model code (seconds of start-up on a CPU box).

Help and --version do not even import the engine; ``info`` and ``tag`` open the bundle
through it (one Engine for every front end) and read its catalog only, so neither the
search side nor the indexing side of the package loads either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer

import retrieval
from retrieval.catalog import Catalog
from retrieval.cli.app import app

from .conftest import invoke

LIBRARIES = ("torch", "torchvision", "timm", "faiss", "annoy", "alembic", "PIL")  # alembic: only to migrate
# The package's own modules that only searching or changing a bundle needs (Pillow, planning).
SEARCH_AND_WRITE = ("retrieval.query", "retrieval.filters", "retrieval.images", "retrieval.indexing", "retrieval.writing")
HEAVY = (*LIBRARIES, *SEARCH_AND_WRITE, "retrieval.engine", "retrieval.extractors")

# Runs `retrieve` with the arguments given as JSON lists in argv[1:], in this fresh
# process, then prints the commands' outputs and the heavy modules that got imported.
_PROBE = f"""
import json, sys
from typer.testing import CliRunner
from retrieval.cli.app import app
outputs = []
for args in map(json.loads, sys.argv[1:]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
    outputs.append(result.stdout)
print(json.dumps({{"outputs": outputs, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _run_fresh(*commands: list[str]) -> tuple[list[str], list[str]]:
    """(each command's stdout, the HEAVY modules imported) of `commands` run in a new process."""
    run = subprocess.run([sys.executable, "-c", _PROBE, *map(json.dumps, commands)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    return found["outputs"], found["heavy"]


def _heavy_imports(*commands: list[str]) -> list[str]:
    return _run_fresh(*commands)[1]


def _command_paths(command: object, path: list[str]) -> list[list[str]]:
    """Every command and group below `command`, as argument lists."""
    found = [path]
    for name, sub in getattr(command, "commands", {}).items():
        found += _command_paths(sub, [*path, name])
    return found


def test_help_of_every_command_and_version_import_nothing_heavy() -> None:
    commands = _command_paths(typer.main.get_command(app), [])
    assert ["train", "triplet"] in commands and ["query"] in commands  # the walk found the tree
    assert _heavy_imports(*([*c, "--help"] for c in commands), ["--version"]) == []


def test_info_and_tag_import_no_model_index_search_or_migration_code(small_bundle: Path, sample_dir: Path) -> None:
    """They read the catalog and the index file's header: no torch, no FAISS or Annoy
    (the index is described, not loaded), no Alembic (the schema is current), no Pillow
    and none of the query or indexing code (nothing is searched or embedded)."""
    cup = str(sorted((sample_dir / "cup").iterdir())[0])
    bundle = str(small_bundle)
    (info, text, tagged, again), heavy = _run_fresh(["info", "-i", bundle, "--json"], ["info", "-i", bundle],
                                                    ["tag", cup, "--add", "x", "-i", bundle, "--json"],
                                                    ["tag", cup, "--add", "x", "-i", bundle, "--json"])
    assert [m for m in heavy if m not in ("retrieval.engine", "retrieval.extractors")] == []
    facts = json.loads(info)
    assert (facts["count"], facts["failed_count"], facts["dim"]) == (10, 0, 1280)
    assert facts["index"] == {"type": "auto", "effective": "flat", "params": {}, "count": 10}
    assert "images      10 indexed, 0 failed" in text and "ann index   auto (now flat)" in text
    assert (json.loads(tagged), json.loads(again)) == ({"changed": 1}, {"changed": 0})
    catalog = Catalog(small_bundle / "catalog.sqlite")
    try:
        assert catalog.rows_by_path([cup])[cup].meta["tags"] == ["x"]
    finally:
        catalog.close()


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
    assert "-i, --index-dir NAME|DIR" in query and "default: default" in query
    assert "-0, --null" in query and "\\t" in query  # the escaping rule is documented
