"""What the cluster tests compare: a bundle's rows and vectors by path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retrieval import Engine


def stored(engine: Engine, root: Path) -> dict[str, tuple[Any, np.ndarray | None]]:
    """Every row under `root` by path, with its stored vector (None for a failed file)."""
    rows = engine.catalog.rows_under([str(root)])
    vectors = engine.catalog.vectors(r.id for r in rows.values())
    return {path: (row, vectors.get(row.id)) for path, row in rows.items()}
