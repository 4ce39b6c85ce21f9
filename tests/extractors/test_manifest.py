"""Extractor identity: the manifest an index stores, what it compares (pooling, sizes,
weights digest; not the weights file's path), its JSON form, and the Engine refusing
an extractor that would embed differently from the one its index was built with.

Nothing here touches the network (tests/extractors/conftest.py). The only extra model
built beyond the shared default is one Lite0 with average pooling.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval import Engine
from retrieval.errors import ExtractorMismatchError
from retrieval.extractors import Extractor, ExtractorConfig, Manifest, create_extractor
from retrieval.extractors.backbones import weights_digest
from retrieval.images.preprocess import Preprocessor
from retrieval.options import EngineOptions

from ..badimages import sample_image
from ..modelhelpers import random_resnet18_file


@pytest.fixture(scope="module")
def avg_extractor() -> Extractor:
    """Lite0 with average pooling: the one extra model build of this file (a few seconds)."""
    return create_extractor(ExtractorConfig(pooling="avg"), "cpu")


def test_default_manifest(extractor: Extractor) -> None:
    m = extractor.manifest
    assert m.config == ExtractorConfig()
    assert (m.config.backbone, m.config.pooling, m.config.image_size) == ("tf_efficientnet_lite0", "gem", 288)
    assert (m.mean, m.std, m.interpolation, m.normalisation) == ((0.5,) * 3, (0.5,) * 3, "bicubic", "l2")
    # the digest is BLAKE2b-128 in lowercase hex, of the very network that embeds ...
    assert re.fullmatch(r"[0-9a-f]{32}", m.weights_digest), m.weights_digest
    trunk = copy.deepcopy(extractor.net.trunk)  # the shared extractor stays untouched
    assert weights_digest(trunk) == m.weights_digest
    # ... and of its weights: one changed value changes it, restoring it restores it
    first = next(trunk.parameters())
    with torch.no_grad():
        first.view(-1)[0] += 1.0
    assert weights_digest(trunk) != m.weights_digest
    with torch.no_grad():
        first.view(-1)[0] -= 1.0
    assert weights_digest(trunk) == m.weights_digest
    assert extractor.preprocessor == Preprocessor(288, "letterbox", "bicubic")


def test_manifest_pooling_mismatch(extractor: Extractor, avg_extractor: Extractor) -> None:
    gem_m, avg_m = extractor.manifest, avg_extractor.manifest
    assert avg_m.config == ExtractorConfig(pooling="avg")
    assert (avg_m.dim, avg_m.weights_digest) == (gem_m.dim, gem_m.weights_digest)  # same trunk
    for a, b in ((gem_m, avg_m), (avg_m, gem_m)):
        with pytest.raises(ExtractorMismatchError, match="pooling"):
            a.check_compatible(b)
    gem_m.check_compatible(gem_m)
    gem_m.check_compatible(Manifest.from_dict(json.loads(gem_m.to_json())))
    img = [sample_image("dolphin", "image_0008.jpg")]
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


# ------------------------------------------------------------------ identity: the Engine


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


def test_engine_accepts_the_same_weights_under_another_path(resnet18_bundle, tmp_path: Path) -> None:
    bundle, old, new = resnet18_bundle
    moved = create_extractor(ExtractorConfig(backbone="resnet18", weights=str(new), image_size=224), "cpu")
    with Engine.open(bundle, extractor=moved, options=EngineOptions(device="cpu", workers=0)) as engine:
        photo = tmp_path / "photo.jpg"
        sample_image("cup", "image_0001.jpg").save(photo)
        assert engine.add([photo]).embedded == 1
    random_resnet18_file(tmp_path / "other.pth", seed=6)
    other = create_extractor(ExtractorConfig(backbone="resnet18", weights=str(tmp_path / "other.pth"),
                                             image_size=224), "cpu")
    with pytest.raises(ExtractorMismatchError, match="weights_digest"):
        Engine.open(bundle, extractor=other)
