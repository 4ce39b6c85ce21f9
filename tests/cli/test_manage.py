"""`retrieve info`: what an index holds, as JSON and as text."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from retrieval.cli.app import app

runner = CliRunner()


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
