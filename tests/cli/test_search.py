"""The `retrieve` command line, end to end on the bundled sample."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval.cli.app import app

runner = CliRunner()


@pytest.fixture()
def indexed(make_engine, sample_dir: Path) -> Path:
    """A bundle holding the 50 sample photos, built through the API with the shared model."""
    engine = make_engine()
    engine.index([sample_dir])
    engine.close()
    return engine.path


def test_index_and_query_through_the_real_console_script(tmp_path: Path, sample_dir: Path) -> None:
    bundle = tmp_path / "cli bundle"
    run = subprocess.run([sys.executable, "-m", "retrieval.cli", "index", str(sample_dir / "cup"),
                          str(sample_dir / "chair"), "-i", str(bundle), "--json", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)  # stdout holds JSON only
    assert (report["added"], report["failed"], report["embedded"]) == (10, 0, 10)
    assert report["images_per_second"] > 0

    query = sorted((sample_dir / "cup").iterdir())[0]
    run = subprocess.run([sys.executable, "-m", "retrieval.cli", "query", str(query), "-k", "3",
                          "-i", str(bundle), "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert str(query) not in [r["path"] for r in results]
    assert "timing" in json.loads(run.stdout)


def test_query_table_by_id_and_path(indexed: Path, sample_dir: Path) -> None:
    query = sorted((sample_dir / "starfish").iterdir())[0]
    res = runner.invoke(app, ["query", str(query), "-k", "4", "-i", str(indexed)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if "starfish" in line]
    assert len(lines) >= 2 and str(query) not in res.stdout

    as_json = runner.invoke(app, ["query", str(query), "-k", "4", "-i", str(indexed), "--json"])
    own_id_results = json.loads(as_json.stdout)["results"]
    first = own_id_results[0]["id"]
    by_id = runner.invoke(app, ["query", "--id", str(first), "-k", "4", "-i", str(indexed), "--json"])
    assert by_id.exit_code == 0, by_id.output
    assert first not in [r["id"] for r in json.loads(by_id.stdout)["results"]]


def test_info_json_and_table(indexed: Path) -> None:
    res = runner.invoke(app, ["info", "-i", str(indexed), "--json"])
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert (info["count"], info["failed_count"], info["dim"]) == (50, 0, 1280)
    assert info["extractor"]["backbone"] == "tf_efficientnet_lite0"
    assert (info["index"]["type"], info["index"]["effective"]) == ("auto", "flat")  # small: exact search
    assert info["size_bytes"] > 50 * 1280 * 4
    table = runner.invoke(app, ["info", "-i", str(indexed)])
    assert "50 indexed" in table.stdout and "tf_efficientnet_lite0" in table.stdout


def test_remove_then_reindex_restores(indexed: Path, sample_dir: Path) -> None:
    victim = sorted((sample_dir / "dolphin").iterdir())[0]
    res = runner.invoke(app, ["remove", str(victim), "-i", str(indexed), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == {"removed": 1}
    info = json.loads(runner.invoke(app, ["info", "-i", str(indexed), "--json"]).stdout)
    assert info["count"] == 49


def test_usage_errors_exit_2_with_one_line(indexed: Path) -> None:
    res = runner.invoke(app, ["query", "-i", str(indexed)])
    assert res.exit_code == 2 and res.stderr.strip().startswith("error:")
    res = runner.invoke(app, ["query", "--id", "1", "--where", "novalue", "-i", str(indexed)])
    assert res.exit_code == 2 and "KEY=VALUE" in res.stderr
    res = runner.invoke(app, ["query", "--id", "424242", "-i", str(indexed)])
    assert res.exit_code == 2 and "424242" in res.stderr and "Traceback" not in res.output


def test_reindex_switches_the_backend_and_index_keeps_it(indexed: Path, sample_dir: Path) -> None:
    res = runner.invoke(app, ["reindex", "--backend", "hnsw", "--param", "M=12", "-i", str(indexed), "--json"])
    assert res.exit_code == 0, res.output
    described = json.loads(res.stdout)
    assert (described["type"], described["effective"], described["params"]["M"]) == ("hnsw", "hnsw", 12)
    res = runner.invoke(app, ["index", str(sample_dir), "-i", str(indexed), "--backend", "flat", "-q"])
    assert res.exit_code == 2 and "reindex --backend" in res.stderr  # an existing index is switched by reindex
    res = runner.invoke(app, ["index", str(sample_dir), "-i", str(indexed), "-q", "--json", "--workers", "0"])
    assert res.exit_code == 0 and json.loads(res.stdout)["unchanged"] == 50
    assert json.loads(runner.invoke(app, ["info", "-i", str(indexed), "--json"]).stdout)["index"]["type"] == "hnsw"


def test_eval_in_an_existing_index_dir(indexed: Path, sample_dir: Path) -> None:
    res = runner.invoke(app, ["eval", str(sample_dir), "--index-dir", str(indexed), "-k", "4", "--json", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert (report["gallery"], report["leave_one_out"]) == (50, True) and 0 < report["map"] <= 1
    assert set(report["precision_at"]) == {"4"}


@pytest.fixture()
def library_logger() -> Iterator[logging.Logger]:
    """The library's logger, its level restored afterwards (the CLI sets it process-wide)."""
    logger = logging.getLogger("retrieval")
    level = logger.level
    yield logger
    logger.setLevel(level)


@pytest.mark.parametrize(("flag", "level"), [("-v", logging.INFO), ("-vv", logging.DEBUG)])
def test_verbose_sets_the_library_log_level(library_logger: logging.Logger, tmp_path: Path, flag: str,
                                            level: int) -> None:
    res = runner.invoke(app, [flag, "info", "-i", str(tmp_path / "none")])
    assert res.exit_code == 2  # no index there: the root options still took effect
    assert library_logger.level == level
