"""Shared fixtures: one warm default extractor per session, small real data, the bad
image files, offline weights, and the fixtures that cost a model build or a training run
(built once per session and shared by the folders that use them).

Building the extractor costs a few seconds, so tests inject the shared instance into
each Engine (constructor injection) instead of loading the weights again.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from retrieval import Engine
from retrieval.options import EngineOptions
from retrieval.extractors import Extractor, ExtractorConfig, create_extractor

from . import badimages
from .annhelpers import Synthetic, clustered, synthetic_bundle

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "scripts" / "sample"
CALTECH = ROOT.parent / "shared" / "data" / "caltech101"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def pytorch_runtime_and_private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test runs the network in PyTorch unless it asks for a runtime (tests/runtimes
    does): `auto` would export and time ONNX graphs for each new extractor, and ONNX Runtime's,
    OpenVINO's and PyTorch's thread pools all in one long pytest process have crashed it.
    Graphs any test exports go to a folder of this session, never the user's cache."""
    saved = {k: os.environ.get(k) for k in ("RETRIEVE_RUNTIME", "RETRIEVE_CACHE_DIR", "RETRIEVE_HOME")}
    os.environ["RETRIEVE_RUNTIME"] = "torch"
    os.environ["RETRIEVE_CACHE_DIR"] = str(tmp_path_factory.mktemp("retrieve-cache"))
    os.environ["RETRIEVE_HOME"] = str(tmp_path_factory.mktemp("retrieve-home"))  # never the user's data folder
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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


# ---------------------------------------------------------------------- bad images


@pytest.fixture(scope="session")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One read-only set of every undecodable kind (tests/badimages.py), written once."""
    return badimages.write_undecodable(tmp_path_factory.mktemp("undecodable"))


# ---------------------------------------------------------------------- synthetic bundles


@pytest.fixture()
def synthetic_2000(tmp_path: Path) -> Iterator[Synthetic]:
    """A flat bundle of 2,000 clustered 32-d vectors (stub extractor: nothing can be embedded)."""
    s = synthetic_bundle(tmp_path / "bundle", clustered(2000, 32, 20, seed=20), "flat")
    yield s
    s.engine.close()


# ---------------------------------------------------------------------- weights, offline


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every torch hub download fails as it would offline; the list records attempts."""
    attempts: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        attempts.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return attempts


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty private TORCH_HOME: no cached checkpoints."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home


@pytest.fixture()
def resnet18_bundle(tmp_path: Path, torch_home: Path, no_network: list[str]) -> tuple[Path, Path, Path]:
    """An empty resnet18 index whose weights file has since moved: (bundle, old, new path)."""
    from .modelhelpers import random_resnet18_file

    old, new = tmp_path / "old" / "r18.pth", tmp_path / "new" / "r18.pth"
    random_resnet18_file(old, seed=5)
    config = ExtractorConfig(backbone="resnet18", weights=str(old), image_size=224)
    Engine.create(tmp_path / "r18-bundle", config, options=EngineOptions(device="cpu", workers=0)).close()
    new.parent.mkdir()
    old.rename(new)
    return tmp_path / "r18-bundle", old, new


# ---------------------------------------------------------------------- trained models


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test (see modelhelpers.single_thread)."""
    from .modelhelpers import single_thread

    with single_thread():
        yield


@pytest.fixture(scope="session")
def triplet_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two untrained triplet checkpoints that differ only in their random head."""
    from .modelhelpers import single_thread, triplet_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    with single_thread():
        return triplet_checkpoint(root / "a", seed=1), triplet_checkpoint(root / "b", seed=2)


@pytest.fixture(scope="session")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny denoiser trained on the sample photos against Gaussian noise."""
    from retrieval.training.autoencoder import train_autoencoder

    from .modelhelpers import TINY_AE, labelled_photos, single_thread

    out = tmp_path_factory.mktemp("ae") / "model"
    with single_thread():
        train_autoencoder([str(p) for p in labelled_photos(SAMPLE)], out, TINY_AE)
    return out
