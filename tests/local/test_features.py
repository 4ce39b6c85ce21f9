"""RootSIFT extraction (frame, cap, grayscale inputs, empty images) and the byte form of
local features (exact round trip, every kind of damage refused)."""

from __future__ import annotations

import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from retrieval.errors import BadImageError, RetrievalError, UnknownNameError
from retrieval.local import EXTRACTORS, LocalFeatures, LocalFeaturesUnavailableError, RootSift
from retrieval.local import opencv as opencv_module
from retrieval.local.features import DESCRIPTOR_SCALE, MAX_STORED_FEATURES


def test_features_are_quantised_rootsift_within_the_image(poster_features: list[LocalFeatures]) -> None:
    f = poster_features[0]
    assert 100 < len(f) <= 1000
    assert (f.width, f.height) == (480, 360)
    assert f.keypoints.dtype == np.float32 and f.descriptors.dtype == np.uint8
    assert (f.points >= -0.5).all() and (f.points[:, 0] <= 479.5).all() and (f.points[:, 1] <= 359.5).all()
    norms = np.linalg.norm(f.unit_descriptors(), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=0.02)  # RootSIFT is unit length, up to the bytes


def test_quantisation_loses_under_one_percent(posters: list[np.ndarray]) -> None:
    gray = cv2.cvtColor(posters[3], cv2.COLOR_RGB2GRAY)
    _, sift = cv2.SIFT.create(nfeatures=300).detectAndCompute(gray, None)
    root = np.sqrt(sift / sift.sum(axis=1, keepdims=True))
    stored = RootSift(max_features=300).extract(gray).unit_descriptors()
    # same detector, same image: the stored rows are the float rows, quantised (in response order)
    error = np.linalg.norm(stored[:, None, :] - root[None, :, :], axis=2).min(axis=1)
    assert error.mean() < 0.01 and error.max() < 0.02


def test_large_images_are_reduced_and_keypoints_scaled_back() -> None:
    """Dark disks on white at known centres, in a 2,000-px image (detected at 640 px):
    each disk gets a keypoint within a few original pixels of its centre."""
    image = np.full((1500, 2000), 255, np.uint8)
    centres = [(300, 300), (1000, 700), (1700, 1200), (500, 1100), (1500, 300)]
    for x, y in centres:
        cv2.circle(image, (x, y), 40, 0, -1)
    f = RootSift().extract(image)
    assert (f.width, f.height) == (2000, 1500)
    for centre in centres:
        assert np.linalg.norm(f.points - np.array(centre), axis=1).min() < 6.0, centre


def test_small_images_can_be_enlarged_and_keypoints_scaled_back() -> None:
    """Disks in a 400-px image enlarged to 1,000 px for detection: keypoints come back in
    the 400-px frame, where the disks are."""
    image = np.full((300, 400), 255, np.uint8)
    centres = [(60, 60), (200, 140), (340, 240), (100, 220)]
    for x, y in centres:
        cv2.circle(image, (x, y), 8, 0, -1)
    f = RootSift(min_side=1000, max_side=1000).extract(image)
    assert (f.width, f.height) == (400, 300)
    for centre in centres:
        assert np.linalg.norm(f.points - np.array(centre), axis=1).min() < 2.0, centre
    with pytest.raises(RetrievalError, match="min_side"):
        RootSift(min_side=800, max_side=640)


def test_the_cap_keeps_the_strongest(posters: list[np.ndarray]) -> None:
    full = RootSift(max_features=1000).extract(posters[1])
    capped = RootSift(max_features=50).extract(posters[1])
    assert len(capped) == 50 < len(full)
    # features are stored strongest first, so the capped ones open the full list (up to
    # the order of ties: SIFT gives one location several orientations of equal response)
    strongest = {tuple(k) for k in full.keypoints[:60].tolist()}
    assert {tuple(k) for k in capped.keypoints.tolist()} <= strongest


@pytest.mark.parametrize("convert", [
    lambda rgb: rgb,
    lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
    lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None],
    lambda rgb: Image.fromarray(rgb).convert("P"),
    lambda rgb: Image.fromarray(rgb).convert("RGBA"),
], ids=["rgb", "rgba", "gray-1ch", "pil-palette", "pil-rgba"])
def test_image_inputs_all_give_features(posters: list[np.ndarray], convert) -> None:
    f = RootSift(max_features=200).extract(convert(posters[2]))
    assert len(f) == 200 and (f.width, f.height) == (480, 360)


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (64, 48), (800, 600)])
def test_flat_and_tiny_images_give_empty_features(shape: tuple[int, int]) -> None:
    f = RootSift().extract(np.full(shape, 128, np.uint8))
    assert len(f) == 0 and f.descriptors.shape == (0, 128)
    assert (f.height, f.width) == shape
    assert LocalFeatures.from_bytes(f.to_bytes()).width == shape[1]


@pytest.mark.parametrize("array", [np.zeros((10, 10), np.float32), np.zeros((0, 5), np.uint8),
                                   np.zeros((10, 10, 5), np.uint8), np.zeros(10, np.uint8)],
                         ids=["float", "empty", "5-channels", "1-d"])
def test_arrays_that_are_not_images_are_refused(array: np.ndarray) -> None:
    with pytest.raises(BadImageError):
        RootSift().extract(array)


def test_settings_are_checked_and_registered() -> None:
    with pytest.raises(RetrievalError, match="max_features"):
        RootSift(max_features=0)
    with pytest.raises(RetrievalError, match="max_side"):
        RootSift(max_side="big")  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="sift"):
        EXTRACTORS.create("orb")
    made = EXTRACTORS.create("sift", {"max_features": "300"})
    assert made == RootSift(max_features=300)
    assert EXTRACTORS.resolve("sift") == {"max_features": 1000, "max_side": 640, "contrast_threshold": 0.04,
                                          "min_side": 0}


def test_round_trip_is_exact(poster_features: list[LocalFeatures]) -> None:
    f = poster_features[4]
    blob = f.to_bytes()
    assert len(blob) == 20 + len(f) * (16 + 128)
    back = LocalFeatures.from_bytes(blob)
    np.testing.assert_array_equal(back.keypoints, f.keypoints)
    np.testing.assert_array_equal(back.descriptors, f.descriptors)
    assert (back.width, back.height, back.kind) == (f.width, f.height, f.kind)


def _with_header(blob: bytes, **fields: int) -> bytes:
    magic, version, code, dim, count, width, height = struct.unpack_from("<4sBBHIII", blob)
    values = {"version": version, "code": code, "dim": dim, "count": count, "width": width, "height": height,
              **fields}
    return struct.pack("<4sBBHIII", magic, *values.values()) + blob[20:]


def _nan_keypoint(blob: bytes) -> bytes:
    damaged = bytearray(blob)
    damaged[20:24] = struct.pack("<f", float("nan"))
    return bytes(damaged)


@pytest.mark.parametrize("damage", [
    lambda b: b[:-1], lambda b: b + b"\0", lambda b: b[:10], lambda b: b"",
    lambda b: b"XXXX" + b[4:],
    lambda b: _with_header(b, version=2), lambda b: _with_header(b, code=9), lambda b: _with_header(b, dim=64),
    lambda b: _with_header(b, count=struct.unpack_from("<I", b, 8)[0] + 1),
    lambda b: _with_header(b, count=MAX_STORED_FEATURES + 1), lambda b: _with_header(b, width=0),
    lambda b: _with_header(b, width=10), _nan_keypoint,
], ids=["short", "long", "header-only", "empty", "magic", "version", "kind", "dimension", "count", "huge-count",
        "zero-width", "keypoints-outside", "nan"])
def test_damaged_bytes_raise_value_error(poster_features: list[LocalFeatures], damage) -> None:
    with pytest.raises(ValueError):
        LocalFeatures.from_bytes(damage(poster_features[5].to_bytes()))


def test_descriptor_scale_fits_a_byte(poster_features: list[LocalFeatures]) -> None:
    """RootSIFT components stay below sqrt(0.2); x DESCRIPTOR_SCALE they never clip at 255."""
    assert np.sqrt(0.2) * DESCRIPTOR_SCALE < 255
    assert max(int(f.descriptors.max()) for f in poster_features) < 240


def test_without_opencv_extraction_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    opencv_module.opencv.cache_clear()
    try:
        with pytest.raises(LocalFeaturesUnavailableError, match=r"pip install 'retrieve\[local\]'"):
            RootSift().extract(np.zeros((8, 8), np.uint8))
    finally:
        opencv_module.opencv.cache_clear()


def test_importing_the_package_loads_neither_opencv_nor_faiss() -> None:
    code = "import sys, retrieval.local; print(sorted({'cv2', 'faiss'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
