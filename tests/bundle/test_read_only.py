"""A bundle on a read-only filesystem answers queries (release 0.1 could not open it at all)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.engine import ANN_FILE

from ..catalog.test_connection import READ_ONLY_MOUNT, _read_only_mounts_work


def _cli(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*READ_ONLY_MOUNT, str(bundle), sys.executable, "-m", "retrieval.cli", *args,
                           "-i", str(bundle)], capture_output=True, text=True, timeout=300)


def test_queries_answer_on_a_read_only_mount_and_writes_say_why_not(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir / "cup", sample_dir / "chair"])
    engine.close()
    bundle = engine.path
    if not _read_only_mounts_work(bundle):
        pytest.skip("needs root and `unshare -m` to make a read-only mount")
    (bundle / ANN_FILE).unlink()  # the reader must rebuild the index, and cannot save it
    before = sorted(p.name for p in bundle.iterdir())

    query = _cli(bundle, "query", "--id", "1", "-k", "3", "--json")
    assert query.returncode == 0, query.stderr
    assert len(json.loads(query.stdout)["results"]) == 3
    assert "internal error" not in query.stderr and "Traceback" not in query.stderr

    tag = _cli(bundle, "tag", "1", "--add", "x")
    assert tag.returncode == 2 and "read-only" in tag.stderr
    assert len(tag.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in bundle.iterdir()) == before  # nothing was written
