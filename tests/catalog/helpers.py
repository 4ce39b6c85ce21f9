"""Helpers shared by the catalog tests: records, the v1 fixture, schemas, worker processes."""

from __future__ import annotations

import functools
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.catalog import FileRecord

from ..conftest import ROOT

V1_BUNDLE = ROOT / "tests" / "fixtures" / "bundle_v1"
WORKER = Path(__file__).with_name("worker.py")


def record(n: int, dim: int = 8, **fields: Any) -> FileRecord:
    """A record for a made-up file number `n`: ok with a random vector, unless `fields` say otherwise."""
    values: dict[str, Any] = {"path": f"/images/{n}.jpg", "content_hash": f"hash{n}", "size": n, "mtime_ns": n,
                              "vector": np.random.default_rng(n).standard_normal(dim).astype(np.float32)}
    return FileRecord(**{**values, **fields})


def copy_v1(folder: Path) -> Path:
    """A private copy of the bundle retrieve 0.1.0 wrote; returns its folder."""
    shutil.copytree(V1_BUNDLE, folder)
    return folder


def schema(path: Path) -> set[tuple[str, str, str | None]]:
    """Every table and index definition, less SQLite's and Alembic's bookkeeping tables."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return {r for r in rows if "sqlite_sequence" not in r[1] and "alembic_version" not in r[1]}


@functools.cache
def v1_schema() -> frozenset[tuple[str, str, str | None]]:
    """The schema of the v1 fixture, read from a copy (SQLite would add -shm files beside it)."""
    with tempfile.TemporaryDirectory() as tmp:
        return frozenset(schema(copy_v1(Path(tmp) / "bundle") / "catalog.sqlite"))


def explain(path: Path, statements: list[tuple[str, object]]) -> list[str]:
    """SQLite's query plan for each statement, as one line each."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return [" ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)) for sql, params in statements]


def start_workers(action: str, catalog: Path, n: int, folder: Path, seconds: float = 0.0,
                  wrapper: tuple[str, ...] = ()) -> list[subprocess.Popen[str]]:
    """Start `n` processes of ``worker.py`` that begin `action` together (see its docstring)."""
    barrier = tempfile.mkdtemp(prefix="barrier-", dir=folder)
    return [subprocess.Popen([*wrapper, sys.executable, str(WORKER), str(ROOT), str(catalog), barrier, str(n),
                              f"w{i}", action, str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(n)]


def finish(workers: list[subprocess.Popen[str]], timeout: float = 120) -> list[tuple[str, str]]:
    """Each worker's (stdout, stderr), after checking it succeeded."""
    outputs = [w.communicate(timeout=timeout) for w in workers]
    for w, (_out, err) in zip(workers, outputs):
        assert w.returncode == 0, f"worker failed:\n{err}"
    return outputs
