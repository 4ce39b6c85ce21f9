"""Finding, hashing, decoding and preparing image files.

Everything here treats bad input as data: decoding raises :class:`BadImageError` with a
one-line reason that the catalog records, and discovery never follows a symlink loop.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import BadImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "DecodedImage",
    "discover",
    "file_digest",
    "is_image_path",
    "load_image",
    "letterbox",
    "Preprocessor",
    "Decoded",
    "DecodeDataset",
    "DecodedBatch",
    "collate_decoded",
]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)

# Images above this many pixels are refused before decoding: a 10 kB PNG can claim
# 100k x 100k pixels and would take 30 GB to decode (a "decompression bomb").
MAX_PIXELS = 100_000_000



def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has one of the supported image suffixes."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def discover(roots: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield every image file below the roots, recursively, each once, sorted per folder.

    Symlinked folders are followed, but each real folder is entered only once, so a
    link back to a parent cannot loop. A root that is a file is yielded as it is.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        root = Path(os.path.abspath(root))
        if root.is_file():
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(key)
            dirnames.sort()
            for name in sorted(filenames):
                if is_image_path(name):
                    yield Path(dirpath) / name


def file_digest(path: str | os.PathLike[str]) -> str:
    """BLAKE2b-128 of the file's bytes: cheap enough to run on every new file."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodedImage:
    """An upright 8-bit RGB image and the facts the catalog keeps about its file.

    `width` and `height` are the file's full size, upright, even when `image` was
    decoded at a reduced JPEG draft scale.
    """

    image: Image.Image
    width: int
    height: int
    format: str


def load_image(
    path: str | os.PathLike[str],
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> DecodedImage:
    """Decode a file into an upright RGB image, or raise BadImageError with the reason.

    Handles EXIF orientation, CMYK, 16-bit and float images, palettes and alpha
    (composited on white, as a viewer shows it). Animated files give their first frame.

    Args:
        path: the file.
        max_pixels: refuse images with more pixels than this, before decoding.
        draft_size: when set, JPEGs are decoded at the smallest power-of-two scale
            that still covers this many pixels on each side: up to 8x faster.
    """
    try:
        with warnings.catch_warnings():
            # Our explicit limit replaces Pillow's warning, for this call only.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            rgb, width, height, fmt = _decode(path, max_pixels, draft_size)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError("not a recognised image format") from None
    except FileNotFoundError:
        raise BadImageError("file not found") from None
    except PermissionError:
        raise BadImageError("permission denied") from None
    except IsADirectoryError:
        raise BadImageError("is a directory") from None
    except Image.DecompressionBombError as e:
        raise BadImageError(f"decompression bomb guard: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        reason = str(e).strip() or type(e).__name__
        raise BadImageError(f"cannot decode: {reason}") from None
    return DecodedImage(rgb, width, height, fmt)


def _decode(path: str | os.PathLike[str], max_pixels: int, draft_size: int | None,
            ) -> tuple[Image.Image, int, int, str]:
    """The decoding itself; :func:`load_image` maps its exceptions to reasons."""
    with Image.open(path) as img:
        fmt = img.format or "UNKNOWN"
        if img.width * img.height > max_pixels:
            raise BadImageError(
                f"image is {img.width}x{img.height} pixels, over the limit of "
                f"{max_pixels:,} (decompression bomb guard)"
            )
        if img.width == 0 or img.height == 0:
            raise BadImageError("image has no pixels")
        width, height = img.size
        if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            width, height = height, width  # recorded as seen upright
        if draft_size is not None and fmt == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        rgb = _to_rgb(ImageOps.exif_transpose(img))
    return rgb, width, height, fmt


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or losing the alpha look."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16"):
        a = np.asarray(img).astype(np.float64) / 65535.0 * 255.0 + 0.5
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img)), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    """Map a 32-bit int or float grey image to 0..255 (not by clipping).

    These modes do not say their range, so it is guessed: 0..1 floats, 8-bit values
    stored wide, or else 16-bit values (what PNG and TIFF decoders produce).
    """
    a = a.astype(np.float64)
    if a.size and a.max() <= 1.0 and a.min() >= 0.0:
        top = 1.0
    elif a.size and a.max() <= 255:
        top = 255.0
    else:
        top = 65535.0
    return np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)


def letterbox(
    img: Image.Image, size: int, interpolation: str = "bicubic"
) -> tuple[np.ndarray, int, int]:
    """Resize so the longer side is `size`, keeping the aspect ratio, and pad to a square.

    The image sits in the top-left corner of a `size` x `size` grey canvas; the
    returned height and width say which part is real, so pooling can ignore the rest.

    Returns:
        (HWC uint8 array of shape (size, size, 3), valid height, valid width)
    """
    scale = size / max(img.width, img.height)
    w = max(1, round(img.width * scale))
    h = max(1, round(img.height * scale))
    if (w, h) != img.size:
        resample = Image.Resampling[interpolation.upper()]
        img = img.resize((w, h), resample, reducing_gap=3.0)
    canvas = np.full((size, size, 3), 128, dtype=np.uint8)
    canvas[:h, :w] = np.asarray(img, dtype=np.uint8)
    return canvas, h, w


@dataclass(frozen=True)
class Preprocessor:
    """Picklable image -> uint8 canvas step, run in decode workers.

    `resize` is "letterbox" (keep the aspect ratio, pad) or "squash" (the classic
    stretch to a square, kept to reproduce published baselines).
    """

    image_size: int
    resize: str = "letterbox"
    interpolation: str = "bicubic"

    def __call__(self, img: Image.Image) -> tuple[np.ndarray, int, int]:
        if self.resize == "squash":
            resample = Image.Resampling[self.interpolation.upper()]
            size = self.image_size
            return np.asarray(img.resize((size, size), resample), dtype=np.uint8), size, size
        return letterbox(img, self.image_size, self.interpolation)


@dataclass(frozen=True)
class Decoded:
    """One decode result: either a canvas with its facts, or the reason it failed."""

    index: int
    pixels: np.ndarray | None = None
    valid_h: int = 0
    valid_w: int = 0
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None


class DecodeDataset(torch.utils.data.Dataset):
    """Decodes and preprocesses files by position; a bad file yields an error, not a raise."""

    def __init__(self, paths: list[str], preprocess: Preprocessor, max_pixels: int = MAX_PIXELS) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        try:
            img = load_image(self.paths[i], self.max_pixels, draft_size=self.preprocess.image_size)
            pixels, h, w = self.preprocess(img.image)
        except BadImageError as e:
            return Decoded(i, error=str(e))
        return Decoded(i, pixels, h, w, img.width, img.height, img.format)


@dataclass
class DecodedBatch:
    """A collated batch: stacked canvases of the good files, and the failures."""

    indices: list[int]
    pixels: torch.Tensor  # (N, S, S, 3) uint8
    heights: torch.Tensor  # (N,)
    widths: torch.Tensor
    items: list[Decoded]
    failures: list[Decoded]


def collate_decoded(items: list[Decoded]) -> DecodedBatch:
    """Stack the good items of a batch; keep failures aside with their reasons."""
    good = [d for d in items if d.error is None]
    bad = [d for d in items if d.error is not None]
    if good:
        pixels = torch.from_numpy(np.stack([d.pixels for d in good]))
    else:
        pixels = torch.empty(0, 0, 0, 3, dtype=torch.uint8)
    return DecodedBatch(
        indices=[d.index for d in good],
        pixels=pixels,
        heights=torch.tensor([d.valid_h for d in good], dtype=torch.int64),
        widths=torch.tensor([d.valid_w for d in good], dtype=torch.int64),
        items=[Decoded(d.index, None, d.valid_h, d.valid_w, d.width, d.height, d.format) for d in good],
        failures=bad,
    )
