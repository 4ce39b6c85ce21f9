"""Real processes: a reader beside a writer, and a writer killed midway."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval import Engine
from retrieval.options import EngineOptions
from retrieval.engine import CATALOG_FILE

from .conftest import caltech_slice


def _copy_images(files: list[Path], dst: Path) -> Path:
    for f in files:
        target = dst / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return dst


def _rows(bundle: Path) -> dict[str, tuple[int, str]]:
    """path -> (id, status), read with plain sqlite3 as an outside observer would."""
    try:
        con = sqlite3.connect(f"file:{bundle / CATALOG_FILE}?mode=ro", uri=True, timeout=30)
        try:
            return {p: (i, s) for i, p, s in con.execute("SELECT id, path, status FROM images")}
        finally:
            con.close()
    except sqlite3.OperationalError:
        return {}


def _index_cmd(folder: Path, bundle: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "retrieval.cli", "index", str(folder), "-i", str(bundle),
            "--device", "cpu", "--workers", "0", "--batch-size", "4", *extra]


def test_killed_indexing_resumes_with_nothing_duplicated_or_lost(tmp_path: Path) -> None:
    folder = _copy_images(caltech_slice(per_class=8, classes=16), tmp_path / "images")
    total = 128
    bundle = tmp_path / "bundle"
    proc = subprocess.Popen(_index_cmd(folder, bundle, "-q"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while len(_rows(bundle)) < 12:
        if proc.poll() is not None:
            pytest.fail(f"indexing ended before it could be killed: {proc.stderr.read().decode()[-500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("indexing made no progress")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _rows(bundle)
    assert 12 <= len(before) < total, "the kill must land mid-run"

    rerun = subprocess.run(_index_cmd(folder, bundle, "--json"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["added"] == total - len(before)
    assert report["unchanged"] == len(before) and report["failed"] == 0
    after = _rows(bundle)
    assert len(after) == total
    assert all(after[p] == before[p] for p in before), "rows committed before the kill keep their ids"
    with Engine.open(bundle, options=EngineOptions(device="cpu")) as engine:
        assert len(engine.catalog.vectors([i for i, _ in after.values()])) == total
        assert engine.ann.ntotal == total


def test_a_second_process_queries_while_another_adds(tmp_path: Path, make_engine, sample_dir: Path,
                                                      extractor) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    query_vec = engine.vectors([1])[0]
    engine.close()
    more = _copy_images(caltech_slice(per_class=6, classes=16), tmp_path / "more")
    writer = subprocess.Popen(_index_cmd(more, engine.path, "-q"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    counts = []
    with Engine.open(engine.path, extractor=extractor) as reader:
        while True:
            finished = writer.poll() is not None
            hits = reader.search(query_vec, k=20)
            assert len(hits) == 20
            live = {i for i, _ in _rows(engine.path).values()}
            assert {h.id for h in hits} <= live
            counts.append(reader.ann.ntotal)
            if finished:
                break
            time.sleep(0.2)
    assert writer.returncode == 0, writer.stderr.read().decode()[-500:]
    assert counts[-1] == 50 + 96
    assert len(set(counts)) > 2, f"the reader should have seen the index grow: {counts}"
    assert np.all(np.diff(counts) >= 0)
