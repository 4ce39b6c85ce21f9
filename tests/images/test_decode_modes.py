"""Awkward but valid images decode to upright RGB with their colours: CMYK, 16-bit,
palette (with and without transparency), alpha, and EXIF-rotated JPEGs, also at the
indexer's reduced draft scale.

All files are generated (see tests/badimages.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.images.decode import load_image

from .. import badimages as bi


def _rgb(decoded) -> np.ndarray:
    assert decoded.image.mode == "RGB"
    return np.asarray(decoded.image).astype(int)


def _is_red(px: np.ndarray) -> bool:
    return px[0] > 200 and px[1] < 70 and px[2] < 70


def _is_white(px: np.ndarray) -> bool:
    return bool((px > 220).all())


def _corners(a: np.ndarray) -> dict[str, np.ndarray]:
    """Mean colour of a small patch well inside each corner."""
    h, w = a.shape[:2]
    ph, pw = max(1, h // 10), max(1, w // 10)
    y0, y1, x0, x1 = 1, h - 1 - ph, 1, w - 1 - pw
    return {
        "top-left": a[y0:y0 + ph, x0:x0 + pw].reshape(-1, 3).mean(0),
        "top-right": a[y0:y0 + ph, x1:x1 + pw].reshape(-1, 3).mean(0),
        "bottom-left": a[y1:y1 + ph, x0:x0 + pw].reshape(-1, 3).mean(0),
        "bottom-right": a[y1:y1 + ph, x1:x1 + pw].reshape(-1, 3).mean(0),
    }


@pytest.mark.parametrize("draft_size", [None, 8], ids=["full", "draft"])
def test_cmyk_jpeg_decodes_to_rgb_with_its_colours(tmp_path: Path, draft_size: int | None) -> None:
    src = Image.open(bi.write_cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert src.mode == "CMYK"
    decoded = load_image(tmp_path / "cmyk.jpg", draft_size=draft_size)
    a = _rgb(decoded)
    h, w = a.shape[:2]
    assert (decoded.width, decoded.height) == (64, 32)
    left, right = a[h // 2, w // 4], a[h // 2, 3 * w // 4]
    assert np.abs(left - bi.RED).max() <= 12, left
    assert np.abs(right - bi.BLUE).max() <= 12, right


def test_16_bit_gradient_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = bi.write_gray16_png(tmp_path / "gray16.png")
    with Image.open(path) as src:
        assert src.mode.startswith("I")
        raw = np.asarray(src)
        assert raw[0, 128] > 32_000  # mid-grey in 16 bits
    a = _rgb(load_image(path))
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    row = a[0, :, 0]
    assert row[0] <= 1 and row[-1] >= 254
    assert abs(int(row[128]) - 128) <= 2, row[128]  # 32896 / 65535 of white, not clipped to 255
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 200  # the gradient survives


def test_dark_16_bit_image_stays_dark(tmp_path: Path) -> None:
    path = bi.write_gray16_png(tmp_path / "dark16.png", top=255)
    with Image.open(path) as src:
        assert src.mode == "I;16"
    a = _rgb(load_image(path))
    assert a.max() <= 1, f"16-bit values <= 255 of 65535 came out as {a.max()}"


@pytest.mark.parametrize("transparent", [False, True], ids=["opaque", "transparent"])
def test_palette_png_decodes_to_rgb(tmp_path: Path, transparent: bool) -> None:
    path = bi.write_palette_png(tmp_path / "palette.png", transparent)
    with Image.open(path) as src:
        assert src.mode == "P" and ("transparency" in src.info) == transparent
    a = _rgb(load_image(path))
    assert tuple(a[8, 4]) == bi.RED
    assert tuple(a[8, 24]) == (bi.WHITE if transparent else bi.BLUE)


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    path = bi.write_rgba_png(tmp_path / "rgba.png")
    a = _rgb(load_image(path))
    assert tuple(a[15, 5]) == bi.RED  # opaque stays
    assert tuple(a[15, 30]) == bi.WHITE  # fully transparent black shows the white background
    assert all(abs(v - 127) <= 2 for v in a[5, 30]), a[5, 30]  # half-transparent black: mid-grey


EXIF_CASES = {  # orientation: (upright size of the 60x40 stored image, corner the marker lands in)
    3: ((60, 40), "bottom-right"),
    6: ((40, 60), "top-right"),
    8: ((40, 60), "bottom-left"),
}


@pytest.mark.parametrize("orientation", sorted(EXIF_CASES))
def test_exif_rotated_jpeg_is_decoded_upright(tmp_path: Path, orientation: int) -> None:
    path = bi.write_exif_rotated_jpeg(tmp_path / f"exif{orientation}.jpg", orientation)
    with Image.open(path) as src:
        assert src.size == (60, 40) and src.getexif()[bi.EXIF_ORIENTATION] == orientation
    decoded = load_image(path)
    size, marker = EXIF_CASES[orientation]
    assert decoded.image.size == size and (decoded.width, decoded.height) == size
    corners = _corners(_rgb(decoded))
    assert _is_red(corners[marker]), (marker, corners)
    assert all(_is_white(c) for name, c in corners.items() if name != marker), corners


def test_exif_rotated_jpeg_decoded_at_draft_scale_keeps_full_upright_size(tmp_path: Path) -> None:
    path = bi.write_exif_rotated_jpeg(tmp_path / "big6.jpg", 6, size=(1200, 800))
    decoded = load_image(path, draft_size=224)  # what the indexer does
    assert decoded.image.width < decoded.image.height  # upright: portrait
    assert max(decoded.image.size) < 1200  # really decoded at a reduced scale
    assert (decoded.width, decoded.height) == (800, 1200)  # the file's full size, upright
    corners = _corners(_rgb(decoded))
    assert _is_red(corners["top-right"]) and _is_white(corners["top-left"]), corners


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_garbage_exif_block_is_ignored(tmp_path: Path) -> None:
    junk = b"Exif\x00\x00" + np.random.default_rng(3).bytes(64)
    path = bi.write_exif_rotated_jpeg(tmp_path / "junk-exif.jpg", 1, exif=junk)
    decoded = load_image(path)
    assert decoded.image.size == (60, 40)
    assert _is_red(_corners(_rgb(decoded))["top-left"])
