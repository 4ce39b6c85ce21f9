"""The two resizers of images.preprocess: PyTorch's uint8 kernel (decode workers) and
Pillow's (a single query) make canvases whose vectors agree to the cosine runtimes agree to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.errors import UnknownNameError
from retrieval.extractors import ExtractorConfig, create_extractor
from retrieval.images.batches import DecodeDataset
from retrieval.images.preprocess import Preprocessor

from ..conftest import SAMPLE

MIN_COSINE = 0.9999  # what runtimes must agree to (tests/runtimes)


def sample_paths() -> list[Path]:
    """Two real photos of each sample class (varied sizes and aspect ratios)."""
    return [p for d in sorted(SAMPLE.iterdir()) if d.is_dir() for p in sorted(d.glob("*.jpg"))[:2]]


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    shots = [Image.open(p).convert("RGB") for p in sample_paths()]
    return [*shots, shots[0].resize((60, 37)), shots[1].resize((23, 90))]  # and two the canvas enlarges


@pytest.mark.parametrize("resize", ["letterbox", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_torch_canvases_are_pillows_to_a_few_levels(photos: list[Image.Image], resize: str,
                                                    interpolation: str) -> None:
    pillow, torch = Preprocessor(160, resize, interpolation), Preprocessor(160, resize, interpolation, "torch")
    differing = 0
    for photo in photos:
        (a, ha, wa), (b, hb, wb) = pillow(photo), torch(photo)
        assert (ha, wa) == (hb, wb) and a.shape == b.shape == (160, 160, 3) and b.dtype == np.uint8
        diff = np.abs(a.astype(np.int16) - b)
        # Letterbox: rounding apart. Squash enlarges one axis while it shrinks the other, and
        # the two clip bicubic's overshoot between their passes in a different order.
        assert diff.max() <= (2 if resize == "letterbox" else 8) and diff.mean() < 0.25
        differing += bool(diff.any())
    assert differing, "PyTorch's kernel never ran: every canvas is Pillow's to the bit"


def test_vectors_of_either_resizer_agree(photos: list[Image.Image]) -> None:
    extractor = create_extractor(ExtractorConfig(image_size=160), "cpu")
    vectors = []
    for resizer in ("pillow", "torch"):
        canvases = [Preprocessor(160, resizer=resizer)(p) for p in photos]
        vectors.append(extractor.embed(*extractor.batch_inputs(
            np.stack([c[0] for c in canvases]), np.array([c[1] for c in canvases]), np.array([c[2] for c in canvases]))))
    assert float((vectors[0] * vectors[1]).sum(1).min()) >= MIN_COSINE


def test_an_unknown_resizer_is_refused() -> None:
    with pytest.raises(UnknownNameError, match="resizer 'opencv'"):
        Preprocessor(160, resizer="opencv")


def test_nearest_neighbour_stays_pillows(photos: list[Image.Image]) -> None:
    """No antialiasing to share: Pillow's canvases, to the bit, whichever resizer is asked."""
    for photo in photos[:3]:
        np.testing.assert_array_equal(Preprocessor(160, interpolation="nearest", resizer="torch")(photo)[0],
                                      Preprocessor(160, interpolation="nearest")(photo)[0])


def test_decode_workers_resize_with_pytorch(photos: list[Image.Image]) -> None:
    """The indexer's dataset makes PyTorch's canvases, whatever resizer it was handed."""
    paths = sample_paths()
    dataset = DecodeDataset([str(p) for p in paths], Preprocessor(160))
    for i in range(len(paths)):
        item = dataset[i]
        assert item.pixels is not None
        np.testing.assert_array_equal(item.pixels, Preprocessor(160, resizer="torch")(photos[i])[0])
