"""Corruptions (retrieval/training/corruptions.py) against their stated statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval.errors import RetrievalError
from retrieval.training.corruptions import CorruptionSettings, corrupt, corrupt_image

pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see modelhelpers.single_thread


def test_corruptions_have_the_stated_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    grey = torch.full((4, 3, 64, 64), 0.5)
    noisy = corrupt(grey, "gaussian", 0.1, gen)
    assert float((noisy - grey).std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float((noisy - grey).mean())) < 0.005

    sp = corrupt(grey, "salt_pepper", 0.05, gen)
    changed = (sp != grey).any(dim=1)  # a pixel changes in all channels at once
    assert float(changed.float().mean()) == pytest.approx(0.05, rel=0.1)
    assert bool(((sp == 0) | (sp == 1)).all(dim=1)[changed].all())
    assert float((sp == 1).all(dim=1).float().mean()) == pytest.approx(0.025, rel=0.15)  # half salt

    image = torch.rand((1, 3, 64, 64), generator=gen)
    errors = [float((corrupt(image, "jpeg", q) - image).abs().mean()) for q in (90, 40, 10)]
    assert errors == sorted(errors) and errors[0] > 0  # lower quality, larger error
    blurred = corrupt(image, "blur", 1.5)
    assert blurred.shape == image.shape and float(blurred.std()) < 0.5 * float(image.std())  # noise smoothed away
    for kind in ("gaussian", "salt_pepper", "blur"):
        assert torch.equal(corrupt(image, kind, 0.0, gen), image)

    img = Image.new("RGB", (40, 30), (120, 60, 200))
    assert corrupt_image(img, "gaussian", 0.2, seed=1).size == (40, 30)
    assert np.array_equal(np.asarray(corrupt_image(img, "gaussian", 0.2, seed=1)),
                          np.asarray(corrupt_image(img, "gaussian", 0.2, seed=1)))
    with pytest.raises(RetrievalError, match="turned off"):
        CorruptionSettings(0.0, 0.0, 100, 0.0)
