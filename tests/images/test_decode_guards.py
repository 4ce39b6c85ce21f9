"""What `load_image` refuses, and how it says so: corrupt, truncated, zero-byte,
non-image and decompression-bomb files, unreadable, missing and folder paths. Each is a
BadImageError whose one-line reason names the problem.

All files are generated (see tests/badimages.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import PIL.ImageFile
import pytest
from PIL import Image

from retrieval.errors import BadImageError
from retrieval.images.decode import MAX_PIXELS, load_image

from .. import badimages as bi


@pytest.mark.parametrize("kind", sorted(bi.UNDECODABLE))
@pytest.mark.parametrize("draft_size", [None, 224], ids=["full", "draft"])
def test_undecodable_file_raises_bad_image_error_with_its_reason(bad_dir: Path, kind: str,
                                                                 draft_size: int | None) -> None:
    path = bi.undecodable(bad_dir, kind)
    with pytest.raises(BadImageError) as info:
        load_image(path, draft_size=draft_size)
    reason = str(info.value)
    assert bi.UNDECODABLE[kind][2] in reason
    assert "\n" not in reason and reason.strip() == reason


def test_decompression_bomb_is_refused_by_default_before_decoding(bad_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = bi.undecodable(bad_dir, "bomb")
    assert bomb.stat().st_size < 100_000, "the bomb must be small on disk"
    with Image.open(bomb) as img:  # a real, valid file: only its size is the problem
        assert img.size == (12_000, 12_000) and img.width * img.height > MAX_PIXELS

    def no_decoding(self, *a, **k):
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", no_decoding)
    # Our limit names the size; far beyond it, Pillow's own guard (which we leave in
    # place for the host process) refuses first and names the pixel count.
    for path, size in [(bomb, "12000x12000"), (bi.undecodable(bad_dir, "bomb_header"), "10000000000 pixels")]:
        with pytest.raises(BadImageError, match="decompression bomb") as info:
            load_image(path)
        assert size in str(info.value), str(info.value)


def test_max_pixels_limit_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    assert load_image(path, max_pixels=64 * 64).image.size == (64, 64)
    with pytest.raises(BadImageError, match="over the limit of 4,095"):
        load_image(path, max_pixels=64 * 64 - 1)


def test_unreadable_file_reason_is_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.jpg"
    shutil.copyfile(bi.sample_photos(1)[0], locked)
    real_open = os.open

    def guarded_open(path, *a, **k):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", guarded_open)
    with pytest.raises(BadImageError, match="permission denied"):
        load_image(locked)


def test_missing_file_and_directory_reasons(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "album.jpg").mkdir()
    with pytest.raises(BadImageError, match="directory"):
        load_image(tmp_path / "album.jpg")
