"""Shared fixtures: one warm default extractor per session, and small real data.

Building the extractor costs a few seconds, so tests inject the shared instance into
each Engine (constructor injection) instead of loading the weights again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from retrieval import Engine
from retrieval.options import EngineOptions
from retrieval.extractors import Extractor, ExtractorConfig, create_extractor

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "scripts" / "sample"
CALTECH = ROOT.parent / "shared" / "data" / "caltech101"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def extractor() -> Extractor:
    """The default extractor (Lite0, GeM), built once, on the CPU."""
    return create_extractor(ExtractorConfig(), "cpu")


@pytest.fixture()
def sample_dir(tmp_path: Path) -> Path:
    """A private copy of the bundled 50-photo sample (10 classes x 5), safe to modify."""
    dst = tmp_path / "photos"
    shutil.copytree(SAMPLE, dst, ignore=shutil.ignore_patterns("*.md"))
    return dst


@pytest.fixture()
def make_engine(tmp_path: Path, extractor: Extractor):
    """Factory for engines on fresh bundles that share the warm extractor."""
    engines: list[Engine] = []

    def make(name: str = "bundle", backend: str | None = None, backend_params: dict | None = None,
             **options: Any) -> Engine:
        """`options` are EngineOptions fields; the engine runs on the CPU with in-process decoding."""
        options.setdefault("workers", 0)
        engine = Engine.create(tmp_path / name, extractor, exist_ok=True, backend=backend,
                               backend_params=backend_params, options=EngineOptions(device="cpu", **options))
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.close()


def caltech_slice(per_class: int, classes: int, split: str = "test") -> list[Path]:
    """The first images of the first classes of a Caltech-101 split (skips if absent)."""
    listing = CALTECH / f"{split}.txt"
    if not listing.exists():
        pytest.skip("../shared/data/caltech101 is not available")
    by_class: dict[str, list[Path]] = {}
    for line in listing.read_text().split():
        by_class.setdefault(line.split("/")[0], []).append(CALTECH / "images" / line)
    chosen = sorted(by_class)[:classes]
    return [p for c in chosen for p in by_class[c][:per_class]]
