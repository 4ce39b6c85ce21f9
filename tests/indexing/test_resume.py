"""A real `retrieve index` process killed midway: the rerun finishes the job with nothing
duplicated or lost, and rows committed before the kill keep their ids."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from retrieval import Engine
from retrieval.options import EngineOptions

from ..conftest import caltech_slice
from ..processhelpers import catalog_rows, copy_images, index_command


def test_killed_indexing_resumes_with_nothing_duplicated_or_lost(tmp_path: Path) -> None:
    folder = copy_images(caltech_slice(per_class=8, classes=16), tmp_path / "images")
    total = 128
    bundle = tmp_path / "bundle"
    proc = subprocess.Popen(index_command(folder, bundle, "-q"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(catalog_rows(bundle)) < 12:
        if proc.poll() is not None:
            pytest.fail(f"indexing ended before it could be killed: {proc.stderr.read().decode()[-500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("indexing made no progress")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = catalog_rows(bundle)
    assert 12 <= len(before) < total, "the kill must land mid-run"

    rerun = subprocess.run(index_command(folder, bundle, "--json"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["added"] == total - len(before)
    assert report["unchanged"] == len(before) and report["failed"] == 0
    after = catalog_rows(bundle)
    assert len(after) == total
    assert all(after[p] == before[p] for p in before), "rows committed before the kill keep their ids"
    with Engine.open(bundle, options=EngineOptions(device="cpu")) as engine:
        assert len(engine.catalog.vectors([i for i, _ in after.values()])) == total
        assert engine.ann.ntotal == total
