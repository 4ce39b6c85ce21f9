"""Weights of the torchvision backbones: from files (torch, safetensors, wrapped
checkpoints), from the hub cache only when they match their published hash, downloads
checked and loaded tensors-only, and one clear error for every file that cannot serve.

Nothing here touches the network: every torch hub download raises
(tests/extractors/conftest.py), and TORCH_HOME points into tmp_path wherever the hub
cache matters.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import retrieval.extractors.backbones as backbones
from retrieval.errors import WeightsUnavailableError
from retrieval.extractors import ExtractorConfig, create_extractor
from retrieval.extractors.backbones import create_trunk, load_weights_file

from ..modelhelpers import random_resnet18_file

RESNET18_URL = torchvision.models.get_model_weights("resnet18").DEFAULT.url


@pytest.mark.parametrize(("target", "error"), [
    ("download_url_to_file", urllib.error.URLError("no route to host")),
    ("load_state_dict_from_url", urllib.error.URLError("no route to host")),
    ("load_state_dict_from_url", TimeoutError("timed out")),
])
def test_torchvision_backbone_offline_without_weights(torch_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                      target: str, error: Exception) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(torch.hub, target, fail)
    with pytest.raises(WeightsUnavailableError) as info:
        create_trunk("resnet18")
    message = str(info.value)
    assert "--weights" in message and RESNET18_URL in message
    assert str(torch_home / "hub" / "checkpoints" / os.path.basename(RESNET18_URL)) in message


def test_torchvision_backbone_from_a_weights_file(tmp_path: Path, torch_home: Path, no_network: list[str]) -> None:
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    random_resnet18_file(a, seed=1)
    random_resnet18_file(b, seed=2)
    trunk_a, trunk_b = create_trunk("resnet18", a), create_trunk("resnet18", b)
    assert trunk_a.dim == 512 and trunk_a.weights_source == str(a)
    assert trunk_a.weights_digest != trunk_b.weights_digest
    assert create_trunk("resnet18", str(a)).weights_digest == trunk_a.weights_digest
    assert not trunk_a.module.training
    with torch.inference_mode():
        fmap = trunk_a.module(torch.randn(1, 3, 224, 224))
    assert fmap.shape == (1, 512, 7, 7)

    ex = create_extractor(ExtractorConfig(backbone="resnet18", weights=str(a), image_size=224), "cpu")
    assert ex.dim == 512 and ex.manifest.weights_digest == trunk_a.weights_digest
    assert (ex.manifest.interpolation, ex.manifest.mean) == ("bilinear", (0.485, 0.456, 0.406))
    v = ex.embed_images([Image.new("RGB", (300, 200), (10, 200, 30))])
    assert v.shape == (1, 512) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert no_network == []


def test_torchvision_weights_from_safetensors_and_wrapped_checkpoints(tmp_path: Path, torch_home: Path) -> None:
    state = random_resnet18_file(tmp_path / "w.safetensors", seed=3)
    torch.save(state, tmp_path / "w.pth")
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    names = ("w.safetensors", "w.pth", "wrapped.pt")
    digests = {p: create_trunk("resnet18", tmp_path / p).weights_digest for p in names}
    assert len(set(digests.values())) == 1, digests
    loaded = load_weights_file(str(tmp_path / "wrapped.pt"))
    assert set(loaded) == set(state)


def test_hub_cache_weights_are_used_when_they_match_their_published_hash(
        torch_home: Path, no_network: list[str], tmp_path: Path) -> None:
    state = random_resnet18_file(tmp_path / "w.pth", seed=4)
    digest = hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()[:8]
    url = f"https://download.invalid/models/resnet18-{digest}.pth"
    cached = torch_home / "hub" / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "w.pth", cached)
    loaded = backbones._download(url)
    assert no_network == [], "a cached checkpoint must not be downloaded again"
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_tampered_weights_in_the_hub_cache_are_refused(torch_home: Path, no_network: list[str]) -> None:
    """resnet18's published file name carries the first hex digits of its SHA-256: other bytes
    under that name (here: random weights) are not the published weights."""
    cached = torch_home / "hub" / "checkpoints" / os.path.basename(RESNET18_URL)
    random_resnet18_file(cached, seed=4)
    with pytest.raises(WeightsUnavailableError, match="published hash"):
        create_trunk("resnet18")
    assert no_network == []


def test_downloads_check_the_hash_and_load_tensors_only(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_load(url: str, **kwargs: object) -> dict[str, torch.Tensor]:
        seen.update(kwargs, url=url)
        raise RuntimeError('invalid hash value (expected "f37072fd", got "00000000")')

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_load)
    with pytest.raises(WeightsUnavailableError, match="failed their check"):
        create_trunk("resnet18")
    assert seen["url"] == RESNET18_URL
    assert seen["check_hash"] is True and seen["weights_only"] is True


def test_unreadable_file_in_the_hub_cache(torch_home: Path) -> None:
    cached = torch_home / "hub" / "checkpoints" / os.path.basename(RESNET18_URL)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage, not a checkpoint\n")
    with pytest.raises(WeightsUnavailableError):
        create_trunk("resnet18")


def test_wrong_weights_file_for_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(WeightsUnavailableError) as info:
        create_trunk("resnet18", path)
    assert str(path) in str(info.value) and "resnet18" in str(info.value)


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint", "list"])
def test_unreadable_weights_files(tmp_path: Path, content: bytes | str | None) -> None:
    path = tmp_path / "weights.pth"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsUnavailableError) as info:
        create_trunk("resnet18", path)
    assert str(path) in str(info.value)
    bad_safetensors = tmp_path / "weights.safetensors"
    bad_safetensors.write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        load_weights_file(str(bad_safetensors))
