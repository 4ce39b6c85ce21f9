"""Multi-scale embedding (retrieval/extractors/pooling/multiscale.py, the `scales` field of
ExtractorConfig): the merge formula, the canvas rescaling, the single scale being exactly
the old single-pass embedding, and how scales are checked, stored and compared.

One extra model is built (Lite0 at two scales, a few seconds).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest
from pathlib import Path
import torch
import torch.nn.functional as F

from retrieval.errors import ExtractorMismatchError, RetrievalError
from retrieval.extractors import Extractor, ExtractorConfig, Manifest, create_extractor
from retrieval.extractors.bottleneck import BottleneckExtractor
from retrieval.extractors.pooling.multiscale import combine_scales, embed_scales, rescale_canvas
from retrieval.images.preprocess import letterbox

from ..badimages import sample_image
from ..conftest import ROOT


@pytest.fixture(scope="module")
def two_scale_extractor() -> BottleneckExtractor:
    built = create_extractor(ExtractorConfig(scales=(1.0, 0.5)), "cpu")
    assert isinstance(built, BottleneckExtractor)
    return built


def _canvases(*names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    prepared = [letterbox(sample_image(c, f), 288) for c, f in names]
    return (torch.from_numpy(np.stack([p[0] for p in prepared])), torch.tensor([p[1] for p in prepared]),
            torch.tensor([p[2] for p in prepared]))


def test_one_scale_of_one_is_the_single_pass_forward() -> None:
    calls = []

    def forward(p: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        calls.append(p)
        return torch.ones(len(p), 2)

    pixels = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    out = embed_scales(forward, pixels, torch.tensor([8, 4]), torch.tensor([4, 8]), (1.0,), p=3.0)
    assert calls == [pixels] and calls[0] is pixels and out.shape == (2, 2)  # the canvas itself, untouched


def test_default_extractor_embeds_exactly_as_its_network(extractor: BottleneckExtractor) -> None:
    assert extractor.manifest.config.scales == (1.0,)
    pixels, hs, ws = _canvases(("airplanes", "image_0012.jpg"), ("cup", "image_0001.jpg"))
    with torch.inference_mode():
        expected = extractor.net(pixels, hs, ws).numpy()
    np.testing.assert_array_equal(extractor.embed(pixels, hs, ws), expected)


def test_combine_is_the_power_mean_of_the_scales() -> None:
    g = torch.Generator().manual_seed(0)
    descs = [F.normalize(torch.rand(4, 6, generator=g, dtype=torch.float64), dim=1) for _ in range(3)]
    stacked = np.stack([d.numpy() for d in descs])
    for p in (1.0, 3.0):
        merged = np.mean(stacked**p, axis=0) ** (1 / p)
        expected = merged / np.linalg.norm(merged, axis=1, keepdims=True)
        np.testing.assert_allclose(combine_scales(descs, p).numpy(), expected, rtol=1e-6)
    # p = 1 is the normalised sum; a larger p leans towards each dimension's maximum
    np.testing.assert_allclose(combine_scales(descs, 1.0).numpy(),
                               F.normalize(torch.stack(descs).sum(0), dim=1).numpy(), rtol=1e-6)
    assert not np.allclose(combine_scales(descs, 3.0).numpy(), combine_scales(descs, 1.0).numpy())


def test_rescale_keeps_the_valid_fraction_and_the_values() -> None:
    canvas = np.full((1, 288, 288, 3), 128, np.uint8)
    canvas[0, :144] = 200  # a 288 x 144 image letterboxed into the top half
    small = rescale_canvas(torch.from_numpy(canvas), 0.5)
    assert small.shape == (1, 144, 144, 3) and small.dtype == torch.float32
    assert small.min() >= 128 and small.max() <= 200  # antialiased bilinear stays within the input's range
    assert (small[0, :71] == 200).all() and (small[0, 73:] == 128).all()  # the valid half stays the top half
    assert rescale_canvas(torch.from_numpy(canvas), 0.7071).shape == (1, 204, 204, 3)
    assert rescale_canvas(torch.from_numpy(canvas), 1.5).shape == (1, 432, 432, 3)


def test_two_scales_merge_the_network_at_each_scale(extractor: BottleneckExtractor,
                                                    two_scale_extractor: BottleneckExtractor) -> None:
    ms = two_scale_extractor
    assert ms.manifest.config.scales == (1.0, 0.5) and ms.scale_exponent == 3.0
    assert ms.manifest.weights_digest == extractor.manifest.weights_digest and ms.dim == extractor.dim
    pixels, hs, ws = _canvases(("airplanes", "image_0012.jpg"), ("dolphin", "image_0008.jpg"))
    with torch.inference_mode():
        full = extractor.net(pixels, hs, ws)
        half = extractor.net(rescale_canvas(pixels, 0.5), hs, ws)
    got = ms.embed(pixels, hs, ws)
    np.testing.assert_allclose(got, combine_scales([full, half], 3.0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    single = extractor.embed(pixels, hs, ws)
    assert ((got * single).sum(1) > 0.8).all() and not np.allclose(got, single, atol=1e-3)  # related, not equal


@pytest.mark.parametrize("config, exponent", [
    (ExtractorConfig(), 3.0), (ExtractorConfig(pooling_params={"p": 4.5}), 4.5), (ExtractorConfig(pooling="rmac"), 1.0),
    (ExtractorConfig(pooling="avg"), 1.0), (ExtractorConfig(kind="triplet", weights="/ckpt"), 1.0),  # head: may be < 0
])
def test_scales_merge_with_gem_exponent_only_for_plain_gem(config: ExtractorConfig, exponent: float) -> None:
    """The rule reads the manifest alone, so trained extractors (which skip the bottleneck
    constructor) inherit it; checked here without building a network."""
    holder = SimpleNamespace(manifest=SimpleNamespace(config=config))
    assert BottleneckExtractor.scale_exponent.fget(holder) == exponent  # type: ignore[attr-defined]


@pytest.mark.parametrize("given, stored", [
    ((1.0,), (1.0,)), ([0.5, 1, 0.7071], (1.0, 0.7071, 0.5)), ("1, 0.7071,0.5", (1.0, 0.7071, 0.5)),
    ((2, 0.26), (2.0, 0.26)),
])
def test_scales_are_stored_largest_first(given: object, stored: tuple[float, ...]) -> None:
    config = ExtractorConfig(scales=given)  # type: ignore[arg-type]
    assert config.scales == stored and all(type(s) is float for s in config.scales)


@pytest.mark.parametrize("scales, complaint", [
    ((), "1 to 5 numbers"), ((1, 0.9, 0.8, 0.7, 0.6, 0.5), "1 to 5 numbers"), ((0.25,), "above 0.25"),
    ((2.5,), "at most 2"), ((1.0, float("nan")), "above 0.25"), ((1, 1.0), "repeated"), (("x",), "not a number"),
    ((True,), "not a number"), (1.0, "1 to 5 numbers"), ("", "not a number"),
])
def test_bad_scales_are_refused_in_one_line(scales: object, complaint: str) -> None:
    with pytest.raises(RetrievalError, match=complaint) as info:
        ExtractorConfig(scales=scales)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_manifest_records_scales_and_compares_them(extractor: Extractor) -> None:
    m = extractor.manifest
    multi = dataclasses.replace(m, config=dataclasses.replace(m.config, scales=(1.0, 0.5)))
    restored = Manifest.from_dict(json.loads(multi.to_json()))
    assert restored == multi and restored.config.scales == (1.0, 0.5)
    restored.check_compatible(multi)
    with pytest.raises(ExtractorMismatchError, match="scales"):
        m.check_compatible(multi)


def test_a_config_stored_before_scales_existed_reads_as_one_scale(extractor: Extractor) -> None:
    """Release 0.1's manifest (tests/fixtures/bundle_v1) has no scales: it is the default extractor."""
    catalog = ROOT / "tests" / "fixtures" / "bundle_v1" / "catalog.sqlite"
    with sqlite3.connect(f"file:{catalog}?mode=ro&immutable=1", uri=True) as conn:  # no -wal/-shm beside the fixture
        [(text,)] = conn.execute("SELECT value FROM settings WHERE key = 'manifest'").fetchall()
    stored = json.loads(text)
    assert "scales" not in stored["config"]
    manifest = Manifest.from_dict(stored)
    assert manifest.config == ExtractorConfig() and manifest.config.scales == (1.0,)
    manifest.check_compatible(extractor.manifest)


def test_scales_asked_of_an_existing_index_compare_as_the_config_stores_them(tmp_path: Path) -> None:
    """[1.0] or "1" asks for the stored (1.0,); other scales are a mismatch naming them."""
    from retrieval.extractors.spec import require_same_fields

    stored = ExtractorConfig()
    for same in ([1.0], "1", (1,)):
        require_same_fields(tmp_path, stored, {"scales": same})
    with pytest.raises(ExtractorMismatchError, match="scales"):
        require_same_fields(tmp_path, stored, {"scales": "1,0.5"})
