"""A separate process that opens one catalog at the same moment as its siblings.

Run as ``python worker.py ROOT CATALOG BARRIER_DIR N NAME ACTION SECONDS``. Each worker
imports only ``retrieval.catalog`` (not the package, which would load torch: seconds per
process), writes ``NAME.ready`` in BARRIER_DIR and waits until all N are there, so the
workers really start together, then:

* ``open``: opens the catalog (an old bundle: they race to migrate it), prints its revision;
* ``hammer``: creates the catalog (they race to create it) and, for SECONDS, adds rows with
  vectors, tags them and sets their metadata; prints how many writes it made;
* ``read``: opens the catalog as it finds it (say on a read-only mount), prints whether it
  is read-only, its counts, and what a write raises (or the error opening raised).

Any exception (say "database is locked") ends the worker with its traceback and exit 1.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import types
from pathlib import Path

import numpy as np


def _import_catalog(root: Path) -> types.ModuleType:
    """``retrieval.catalog`` without running ``retrieval/__init__`` (which imports torch)."""
    package = types.ModuleType("retrieval")
    package.__path__ = [str(root / "retrieval")]
    sys.modules["retrieval"] = package
    import retrieval.catalog

    return retrieval.catalog


def _barrier(folder: Path, n: int, name: str) -> None:
    (folder / f"{name}.ready").touch()
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.ready"))) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("the other workers never started")
        time.sleep(0.005)


def hammer(catalog_module: types.ModuleType, path: Path, name: str, seconds: float) -> dict[str, int]:
    catalog = catalog_module.Catalog(path, create=True)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    writes = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        record = catalog_module.FileRecord(path=f"/{name}/{writes}.jpg", content_hash=f"{name}-{writes}", size=1,
                                           mtime_ns=writes, vector=rng.standard_normal(8).astype(np.float32))
        [image_id] = catalog.apply([record])
        catalog.update_tags([image_id], add=[name], remove=[])
        catalog.set_metadata(image_id, {"worker": name, "n": writes, "tags": [name]})
        writes += 1
    catalog.close()
    return {"writes": writes}


def read(catalog_module: types.ModuleType, path: Path) -> dict[str, object]:
    errors = sys.modules["retrieval.errors"]
    try:
        catalog = catalog_module.Catalog(path)
    except errors.RetrievalError as e:
        return {"open_error": type(e).__name__, "message": str(e)}
    out: dict[str, object] = {"read_only": catalog.read_only, "counts": catalog.counts()}
    try:
        catalog.set_metadata(1, {"a": 1})
    except errors.RetrievalError as e:
        out.update(write_error=type(e).__name__, message=str(e))
    catalog.close()
    return out


def main() -> None:
    root, path, barrier, n, name, action, seconds = sys.argv[1:8]
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("retrieval.catalog.migrations").setLevel(logging.INFO)  # "upgrading catalog ..." lines
    catalog_module = _import_catalog(Path(root))
    _barrier(Path(barrier), int(n), name)
    if action == "open":
        catalog = catalog_module.Catalog(Path(path))
        print(json.dumps({"revision": catalog.revision()}))
        catalog.close()
    elif action == "read":
        print(json.dumps(read(catalog_module, Path(path))))
    else:
        print(json.dumps(hammer(catalog_module, Path(path), name, float(seconds))))


if __name__ == "__main__":
    main()
