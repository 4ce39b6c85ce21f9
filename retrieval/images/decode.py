"""Decoding one image file with Pillow, treating bad input as data: every failure is a
:class:`BadImageError` with a one-line reason that the catalog records.

Formats are Pillow's own (JPEG, PNG, WebP, AVIF, TIFF, ...), HEIC/HEIF through the
pillow-heif plugin (registered on import, in every decode worker), and camera RAW files
through their embedded JPEG preview (:mod:`.raw`), recorded under the RAW format's name.

A file is read once, bounded (:func:`~retrieval.images.files.read_file`), and decoded from
those bytes, so the caller can store their hash with what it computed from the pixels.
Memory per decode stays near the decoded image itself: a large image is box-reduced
towards the model's input size, strip by strip, before any full-size conversion or alpha
compositing (which, at full size, costs five times the image).
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError

from ..errors import BadImageError
from .files import FileBytes, read_file
from .raw import RawPreview, find_preview

pillow_heif.register_heif_opener()  # HEIC/HEIF: what phones write by default

MAX_PIXELS = 100_000_000

# Before its final resize an image is box-reduced to no less than this many times the
# model's side (the letterbox resize's own reducing gap), so the result barely changes.
REDUCE_GAP = 3
_STRIP_PIXELS = 1 << 20  # pixels per strip of a reduction: a few MB of extra memory

_EXIF_ORIENTATION = 0x0112
_JPEG_END = b"\xff\xd9"  # the end-of-image marker: a file cut short lacks it
# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}

Source = str | os.PathLike[str] | FileBytes
"""A file to decode: its path (read here) or its bytes, already read."""


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG left for a device decoder: its bytes and what its header said.

    `width` and `height` are the upright size; `orientation` is the EXIF tag that
    the decoded pixels still need applied.
    """

    data: bytes
    orientation: int
    width: int
    height: int


@dataclass(frozen=True)
class _Opened:
    """Pillow's lazy image over a file's bytes, or over its RAW preview's (`raw`)."""

    image: Image.Image
    data: bytes
    raw: RawPreview | None

    @property
    def format(self) -> str:
        return self.raw.format if self.raw else self.image.format or "UNKNOWN"

    def orientation(self) -> int:
        """The EXIF orientation to apply: the image's own, else a RAW file's IFD0 one."""
        own = _orientation(self.image)
        return self.raw.orientation if self.raw is not None and own == 1 else own


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
    source: Source,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> DecodedImage:
    """Decode a file into an upright RGB image, or raise BadImageError with the reason.

    Handles EXIF orientation, CMYK, 16-bit and float images, palettes and alpha
    (composited on white, as a viewer shows it). Animated files give their first frame.

    Args:
        source: the file's path, or its bytes read by the caller.
        max_pixels: refuse images with more pixels than this, before decoding.
        draft_size: the side the image will be fitted to, when known: JPEGs are then
            decoded at the smallest power-of-two scale that still covers it (up to 8x
            faster), and any large image is reduced before conversion (see :func:`_reduce`).
    """
    with _reasons():
        opened = _open(source)
        with opened.image:
            return _finish(opened, *_checked_size(opened, max_pixels), draft_size)


def load_image_or_jpeg(
    source: Source,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> DecodedImage | EncodedJpeg:
    """:func:`load_image`, except that a JPEG a device decoder takes comes back undecoded.

    Such a JPEG has passed the same header checks (pixel limit, empty image) and carries
    its upright size and EXIF orientation. Only baseline RGB or greyscale files that end
    with the end-of-image marker qualify: CMYK and YCCK colours, progressive scans (which
    nvJPEG decodes one by one on the host) and truncated files are decoded here by Pillow,
    which converts them or names what is wrong.
    """
    with _reasons():
        opened = _open(source)
        img = opened.image
        with img:
            width, height = _checked_size(opened, max_pixels)
            if opened.raw is None and img.format == "JPEG" and img.mode in ("RGB", "L") \
                    and not img.info.get("progressive") and opened.data.endswith(_JPEG_END):
                return EncodedJpeg(opened.data, opened.orientation(), width, height)
            return _finish(opened, width, height, draft_size)


def _open(source: Source) -> _Opened:
    """Pillow's lazy image over the file's bytes (read here, bounded, if given a path), or
    over the JPEG preview of a camera RAW file."""
    data = (source if isinstance(source, FileBytes) else read_file(source)).data
    raw = find_preview(data)
    if raw is not None:
        data = raw.jpeg
    return _Opened(Image.open(io.BytesIO(data)), data, raw)


@contextmanager
def _reasons() -> Iterator[None]:
    """Turn whatever Pillow raises while opening and decoding bytes into BadImageError
    with a one-line reason (reading the file has named its own failures already)."""
    try:
        with warnings.catch_warnings():
            # Our explicit limit replaces Pillow's warning, for this call only.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError("not a recognised image format") from None
    except Image.DecompressionBombError as e:
        raise BadImageError(f"decompression bomb guard: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct.error) as e:
        reason = str(e).strip() or type(e).__name__
        raise BadImageError(f"cannot decode: {reason}") from None


def _checked_size(opened: _Opened, max_pixels: int) -> tuple[int, int]:
    """The upright (width, height) from the header; refuses bombs and empty images unread."""
    img = opened.image
    if img.width * img.height > max_pixels:
        raise BadImageError(
            f"image is {img.width}x{img.height} pixels, over the limit of "
            f"{max_pixels:,} (decompression bomb guard)"
        )
    if img.width == 0 or img.height == 0:
        raise BadImageError("image has no pixels")
    if opened.orientation() in (5, 6, 7, 8):
        return img.height, img.width  # recorded as seen upright
    return img.width, img.height


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright as stored), 1 when absent or not a valid value."""
    value = img.getexif().get(_EXIF_ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def _finish(opened: _Opened, width: int, height: int, draft_size: int | None) -> DecodedImage:
    """Decode the pixels of a checked image and make them upright 8-bit RGB."""
    img = opened.image
    if draft_size is not None and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    img.load()
    orientation = opened.orientation()  # after loading: a PNG may keep its EXIF after the pixels
    sixteen_bit = img.mode.startswith("I;16")
    img = _reduce(img, draft_size)
    if orientation in _UPRIGHT:
        img = img.transpose(_UPRIGHT[orientation])
    return DecodedImage(_to_rgb(img, sixteen_bit), width, height, opened.format)


def _averaging_mode(img: Image.Image) -> str:
    """A mode in which this image's pixels can be box-averaged and later converted as
    before: palettes become their colours, bilevel grey, 16-bit 32-bit."""
    if img.mode == "P":
        return "RGBA" if "transparency" in img.info else "RGB"
    return {"PA": "RGBA", "1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}.get(img.mode, img.mode)


def _reduce(img: Image.Image, side: int | None) -> Image.Image:
    """The image box-reduced by the largest integer factor that keeps its longer side at
    least REDUCE_GAP x `side` and its shorter side at least `side` (the model never sees
    more), in a mode that averages (:func:`_averaging_mode`).

    The work goes strip by strip, so beyond the decoded image itself memory holds only a
    strip and the small result, whatever the mode: alpha images are averaged premultiplied
    (Pillow's reduce does that), which is the same as compositing first and averaging after.
    """
    mode = _averaging_mode(img)
    w, h = img.size
    factor = min(max(w, h) // (REDUCE_GAP * side), min(w, h) // side) if side else 1
    if factor < 2:
        return img if mode == img.mode else img.convert(mode)
    out = Image.new(mode, (math.ceil(w / factor), math.ceil(h / factor)))
    rows = factor * max(1, _STRIP_PIXELS // (w * factor))
    for top in range(0, h, rows):
        strip = img.crop((0, top, w, min(h, top + rows)))
        out.paste((strip if mode == img.mode else strip.convert(mode)).reduce(factor), (0, top // factor))
    return out


def _to_rgb(img: Image.Image, sixteen_bit: bool) -> Image.Image:
    """Convert an image in an averaging mode (see :func:`_averaging_mode`) to 8-bit RGB
    without clipping or losing the alpha look; `sixteen_bit`: a 32-bit grey image that
    held 16-bit values."""
    mode = img.mode
    if mode == "RGB":
        return img
    if sixteen_bit:
        a = np.asarray(img).astype(np.float64) / 65535.0 * 255.0 + 0.5
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img)), "L").convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La"):
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
