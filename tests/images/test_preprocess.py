"""Letterboxing and the host Preprocessor (retrieval/images/preprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval.errors import UnknownNameError
from retrieval.extractors import ExtractorConfig
from retrieval.images.preprocess import Preprocessor, letterbox


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
