"""Fixtures of the server tests: a tiny index built once per module (the session's warm
extractor, ten sample photos: five cups, five chairs) and FastAPI test clients over it.

The read-only bundle is shared by a module's tests, so tests that change files or the
index build their own with `fresh_bundle`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retrieval import Engine
from retrieval.extractors import Extractor
from retrieval.options import EngineOptions
from retrieval.serve import ServeSettings, create_app

from ..conftest import SAMPLE

TOKEN = "t" * 12 + "-secret-token"
CLASSES = ("cup", "chair")


def copy_sample(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    """The sample photos of `classes`, copied below `root` (one folder per class)."""
    for cls in classes:
        shutil.copytree(SAMPLE / cls, root / cls)
    return root


def build_bundle(folder: Path, extractor: Extractor, photos: Path) -> Path:
    with Engine.create(folder, extractor, options=EngineOptions(device="cpu", workers=0)) as engine:
        engine.index([photos])
    return folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, extractor: Extractor) -> tuple[Path, Path]:
    """(bundle, photos): the ten photos, indexed; shared by the module's tests, never changed."""
    root = tmp_path_factory.mktemp("serve")
    photos = copy_sample(root / "photos")
    return build_bundle(root / "bundle", extractor, photos), photos


@contextmanager
def serving(bundle: Path, extractor: Extractor, raise_server_exceptions: bool = True,
            **settings: object) -> Iterator[TestClient]:
    """A test client over a running app (lifespan entered) on `bundle`; with
    `raise_server_exceptions` False, a bug is answered as a real client would see it."""
    with Engine.open(bundle, options=EngineOptions(device="cpu", workers=0), extractor=extractor) as engine, \
            TestClient(create_app(engine, ServeSettings(**settings)),  # type: ignore[arg-type]
                       raise_server_exceptions=raise_server_exceptions) as client:
        yield client


@pytest.fixture(scope="module")
def client(bundle: tuple[Path, Path], extractor: Extractor) -> Iterator[TestClient]:
    """A read-only server over the shared bundle, with default settings."""
    with serving(bundle[0], extractor) as c:
        yield c


@pytest.fixture()
def fresh_bundle(tmp_path: Path, extractor: Extractor) -> Callable[..., tuple[Path, Path]]:
    """Factory of private bundles (bundle, photos) that a test may change."""
    def make(classes: tuple[str, ...] = ("cup",)) -> tuple[Path, Path]:
        photos = copy_sample(tmp_path / "photos", classes)
        return build_bundle(tmp_path / "bundle", extractor, photos), photos
    return make
