"""Smoke test of scripts/chaos.py: two runs on 20 photos (about a minute on 2 idle cores).

The script is the test of crash safety; this only keeps it working as the CLI and the
API change under it: it must run, print its one line, and find nothing broken.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import CALTECH, ROOT


def test_chaos_script_runs_kills_and_finds_nothing_broken() -> None:
    if not (CALTECH / "train.txt").exists():
        pytest.skip("../shared/data/caltech101 is not available")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "chaos.py"), "--runs", "2", "--images", "20",
                          "--seed", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = json.loads(run.stdout)
    assert counts["runs"] == 2 and counts["kills"] >= 2, counts
    assert counts["lost"] == counts["duplicated"] == counts["stale"] == counts["errors"] == 0, run.stderr[-3000:]
