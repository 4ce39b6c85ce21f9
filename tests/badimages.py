"""Synthetic bad and awkward image files for the bad-input tests (decoding, discovery,
indexing, queries and the command line), and the bundled sample photos.

Every writer takes the destination path (parents are created) and returns it. Files
are made with PIL/numpy from fixed seeds, so each run writes the same bytes.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "scripts" / "sample"

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
EXIF_ORIENTATION = 0x0112


def sample_photos(n: int, cls: str = "cup") -> list[Path]:
    """The first `n` real photos of one class of the bundled sample."""
    photos = sorted(p for p in (SAMPLE / cls).iterdir() if p.suffix == ".jpg")
    assert len(photos) >= n, f"sample class {cls} has only {len(photos)} photos"
    return photos[:n]


def copy_photos(folder: Path, n: int, cls: str = "cup") -> list[Path]:
    """Copies of the first `n` sample photos of `cls` in `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(p, folder / p.name)) for p in sample_photos(n, cls)]


def sample_image(cls: str, name: str) -> Image.Image:
    """One sample photo, decoded to RGB."""
    with Image.open(SAMPLE / cls / name) as im:
        return im.convert("RGB")


def _prepare(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- undecodable files


def write_corrupt(path: Path, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under an image name."""
    path = _prepare(path)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path


def write_truncated_jpeg(path: Path, source: Path | None = None) -> Path:
    """The first half of a real JPEG: the header parses, the scan data stops short."""
    path = _prepare(path)
    data = (source or sample_photos(2)[1]).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_truncated_png(path: Path) -> Path:
    """The first half of a valid PNG of noise (so it does not compress to nothing)."""
    path = _prepare(path)
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(path, "PNG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_empty(path: Path) -> Path:
    """A zero-byte file."""
    path = _prepare(path)
    path.write_bytes(b"")
    return path


def write_text(path: Path) -> Path:
    """A text file under an image name."""
    path = _prepare(path)
    path.write_text("This is a shopping list, not a picture.\n- milk\n- eggs\n", encoding="utf-8")
    return path


def write_bomb(path: Path, side: int = 12_000) -> Path:
    """A real, decodable 1-bit PNG of side x side pixels (144 M for the default): ~20 kB on disk."""
    path = _prepare(path)
    Image.new("1", (side, side)).save(path, "PNG")
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb_header(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny PNG whose header claims width x height pixels (10 G for the default)."""
    path = _prepare(path)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)  # far too little data, never reached
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- awkward but valid files


def write_cmyk_jpeg(path: Path) -> Path:
    """A CMYK JPEG: left half pure red (0, 255, 255, 0), right half pure blue (255, 255, 0, 0)."""
    path = _prepare(path)
    img = Image.new("CMYK", (64, 32), (0, 255, 255, 0))
    img.paste((255, 255, 0, 0), (32, 0, 64, 32))
    img.save(path, "JPEG", quality=95)
    return path


def write_gray16_png(path: Path, top: int = 65535) -> Path:
    """A 16-bit greyscale horizontal gradient 0..top (256 columns x 16 rows), mode I;16."""
    path = _prepare(path)
    row = np.linspace(0, top, 256).round().astype(np.uint16)
    Image.fromarray(np.tile(row, (16, 1))).save(path, "PNG")
    return path


def write_palette_png(path: Path, transparent: bool) -> Path:
    """A palette PNG: left half index 0 (red), right half index 1 (blue).

    With `transparent`, index 1 is the transparent colour.
    """
    path = _prepare(path)
    idx = np.zeros((16, 32), np.uint8)
    idx[:, 16:] = 1
    img = Image.fromarray(idx, "P")
    img.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    if transparent:
        img.save(path, "PNG", transparency=1)
    else:
        img.save(path, "PNG")
    return path


def write_rgba_png(path: Path) -> Path:
    """RGBA: left half opaque red; right half fully transparent black on the bottom
    rows and half-transparent black (alpha 128) on the top rows."""
    path = _prepare(path)
    a = np.zeros((20, 40, 4), np.uint8)
    a[:, :20] = (*RED, 255)
    a[:10, 20:] = (0, 0, 0, 128)
    a[10:, 20:] = (0, 0, 0, 0)
    Image.fromarray(a, "RGBA").save(path, "PNG")
    return path


def write_exif_rotated_jpeg(path: Path, orientation: int, size: tuple[int, int] = (60, 40),
                            exif: bytes | None = None) -> Path:
    """A white JPEG stored `size` (w, h) with a red block in its stored top-left corner,
    tagged with EXIF `orientation` (or carrying the raw `exif` block instead)."""
    path = _prepare(path)
    w, h = size
    img = Image.new("RGB", size, WHITE)
    ImageDraw.Draw(img).rectangle([0, 0, w // 4 - 1, h // 4 - 1], fill=RED)
    if exif is None:
        tags = Image.Exif()
        tags[EXIF_ORIENTATION] = orientation
        exif = tags.tobytes()
    img.save(path, "JPEG", quality=95, exif=exif)
    return path


# Undecodable kinds: file name, writer, a substring the failure reason must contain.
UNDECODABLE = {
    "corrupt": ("corrupt.jpg", write_corrupt, "not a recognised image format"),
    "truncated_jpeg": ("truncated.jpg", write_truncated_jpeg, "truncated"),
    "truncated_png": ("truncated.png", write_truncated_png, "truncated"),
    "zero_byte": ("empty.jpg", write_empty, "not a recognised image format"),
    "non_image": ("notes.png", write_text, "not a recognised image format"),
    "bomb": ("bomb.png", write_bomb, "decompression bomb"),
    "bomb_header": ("bomb-header.png", write_bomb_header, "decompression bomb"),
}

# Awkward but valid kinds that must decode and be indexed.
AWKWARD = {
    "cmyk": ("cmyk.jpg", write_cmyk_jpeg),
    "gray16": ("gray16.png", write_gray16_png),
    "palette": ("palette.png", lambda p: write_palette_png(p, transparent=False)),
    "palette_transparent": ("palette-alpha.png", lambda p: write_palette_png(p, transparent=True)),
    "rgba": ("rgba.png", write_rgba_png),
    "exif6": ("exif6.jpg", lambda p: write_exif_rotated_jpeg(p, 6)),
    "exif8": ("exif8.jpg", lambda p: write_exif_rotated_jpeg(p, 8)),
}


def undecodable(folder: Path, kind: str) -> Path:
    """The file of one UNDECODABLE kind in a folder written by :func:`write_undecodable`."""
    return Path(folder) / UNDECODABLE[kind][0]


def write_undecodable(folder: Path) -> Path:
    """One file of every undecodable kind in `folder` (the real bomb costs ~0.4 s to write)."""
    for name, writer, _ in UNDECODABLE.values():
        writer(Path(folder) / name)
    return Path(folder)


# ---------------------------------------------------------------- awkward folders


def write_loop_tree(root: Path) -> set[str]:
    """root/{a/x.jpg, a/up -> .., b/y.png, b/here -> .}: two images and two symlink loops.

    Returns the two image paths, the only files a walk of `root` may yield.
    """
    photos = sample_photos(2)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copyfile(photos[0], root / "a" / "x.jpg")
    Image.open(photos[1]).save(root / "b" / "y.png")
    os.symlink("..", root / "a" / "up")  # to its own parent: a loop
    os.symlink(".", root / "b" / "here")  # to itself
    return {str(root / "a" / "x.jpg"), str(root / "b" / "y.png")}
