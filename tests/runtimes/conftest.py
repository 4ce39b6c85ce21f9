"""Fixtures of the runtime tests: a graph cache of the session's own (never the user's),
real photos, and the comparison every test makes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.extractors import Extractor
from retrieval.runtimes.session import installed

from ..conftest import SAMPLE

# OpenVINO is an extra: its tests run where it is installed (the dev extras install it).
RUNTIME_NAMES = [name for name in ("onnx", "openvino") if installed(name)]
MIN_COSINE = 0.9999


@pytest.fixture(scope="session")
def graph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the session: a graph exported by one test is reused by the next."""
    return tmp_path_factory.mktemp("retrieve-cache")


@pytest.fixture(autouse=True)
def cache_dir(graph_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("RETRIEVE_CACHE_DIR", str(graph_cache))
    yield graph_cache


@pytest.fixture()
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder, for tests that watch exports and decisions happen."""
    root = tmp_path / "cache"
    monkeypatch.setenv("RETRIEVE_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    """One real photo of each sample class, of varied aspect ratios."""
    paths = [sorted((SAMPLE / d.name).glob("*.jpg"))[1] for d in sorted(SAMPLE.iterdir()) if d.is_dir()]
    return [Image.open(p).convert("RGB") for p in paths]


def lowest_cosine(reference: Extractor, other: Extractor, images: list[Image.Image]) -> float:
    """The lowest cosine between the two extractors' vectors of the same images."""
    a, b = reference.embed_images(images), other.embed_images(images)
    assert a.shape == b.shape and b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    return float((a * b).sum(1).min())
