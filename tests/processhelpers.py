"""Helpers for the tests that run real `retrieve` processes on real photos."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path

from retrieval.engine import CATALOG_FILE


def copy_images(files: list[Path], dst: Path) -> Path:
    """Copy `files` into dst/<class folder>/<name>; returns `dst`."""
    for f in files:
        target = dst / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    return dst


def catalog_rows(bundle: Path) -> dict[str, tuple[int, str]]:
    """path -> (id, status), read with plain sqlite3 as an outside observer would."""
    try:
        con = sqlite3.connect(f"file:{bundle / CATALOG_FILE}?mode=ro", uri=True, timeout=30)
        try:
            return {p: (i, s) for i, p, s in con.execute("SELECT id, path, status FROM images")}
        finally:
            con.close()
    except sqlite3.OperationalError:
        return {}


def index_command(folder: Path, bundle: Path, *extra: str) -> list[str]:
    """`retrieve index FOLDER -i BUNDLE` on the CPU, in batches of 4, in-process decoding."""
    return [sys.executable, "-m", "retrieval.cli", "index", str(folder), "-i", str(bundle),
            "--device", "cpu", "--workers", "0", "--batch-size", "4", *extra]
