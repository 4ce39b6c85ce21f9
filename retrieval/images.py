"""Finding, hashing, decoding and preparing image files.

Everything here treats bad input as data: decoding raises :class:`BadImageError` with a
one-line reason that the catalog records, and discovery never follows a symlink loop.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
    "load_image_or_jpeg",
    "EncodedJpeg",
    "letterbox",
    "fit_size",
    "Preprocessor",
    "Decoded",
    "DecodeDataset",
    "DecodedBatch",
    "collate_decoded",
    "decode_loader",
    "default_workers",
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
_JPEG_END = b"\xff\xd9"  # the end-of-image marker: a file cut short lacks it


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
    with _reasons(), Image.open(path) as img:
        return _finish(img, *_checked_size(img, max_pixels), draft_size)


def load_image_or_jpeg(
    path: str | os.PathLike[str],
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
    with _reasons(), open(path, "rb") as f, Image.open(f) as img:
        width, height = _checked_size(img, max_pixels)
        if img.format == "JPEG" and img.mode in ("RGB", "L") and not img.info.get("progressive"):
            f.seek(0)
            data = f.read()
            if data.endswith(_JPEG_END):
                return EncodedJpeg(data, _orientation(img), width, height)
        return _finish(img, width, height, draft_size)


@contextmanager
def _reasons() -> Iterator[None]:
    """Turn whatever opening and decoding raise into BadImageError with a one-line reason."""
    try:
        with warnings.catch_warnings():
            # Our explicit limit replaces Pillow's warning, for this call only.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
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


def _checked_size(img: Image.Image, max_pixels: int) -> tuple[int, int]:
    """The upright (width, height) from the header; refuses bombs and empty images unread."""
    if img.width * img.height > max_pixels:
        raise BadImageError(
            f"image is {img.width}x{img.height} pixels, over the limit of "
            f"{max_pixels:,} (decompression bomb guard)"
        )
    if img.width == 0 or img.height == 0:
        raise BadImageError("image has no pixels")
    if _orientation(img) in (5, 6, 7, 8):
        return img.height, img.width  # recorded as seen upright
    return img.width, img.height


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright as stored), 1 when absent or not a valid value."""
    value = img.getexif().get(_EXIF_ORIENTATION, 1)
    return value if value in range(1, 9) else 1


def _finish(img: Image.Image, width: int, height: int, draft_size: int | None) -> DecodedImage:
    """Decode the pixels of a checked image and make them upright 8-bit RGB."""
    fmt = img.format or "UNKNOWN"
    if draft_size is not None and fmt == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    img.load()
    return DecodedImage(_to_rgb(ImageOps.exif_transpose(img)), width, height, fmt)


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


def fit_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `size`: the letterboxed image's size.

    One rule for the host and the device paths, so both give the same valid region.
    """
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def letterbox(
    img: Image.Image, size: int, interpolation: str = "bicubic"
) -> tuple[np.ndarray, int, int]:
    """Resize so the longer side is `size`, keeping the aspect ratio, and pad to a square.

    The image sits in the top-left corner of a `size` x `size` grey canvas; the
    returned height and width say which part is real, so pooling can ignore the rest.

    Returns:
        (HWC uint8 array of shape (size, size, 3), valid height, valid width)
    """
    w, h = fit_size(img.width, img.height, size)
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

    def fit(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) an upright image of this size takes on the canvas."""
        if self.resize == "squash":
            return self.image_size, self.image_size
        return fit_size(width, height, self.image_size)


@dataclass(frozen=True)
class Decoded:
    """One decode result: a canvas with its facts, a JPEG's bytes for the device, or the
    reason it failed."""

    index: int
    pixels: np.ndarray | None = None
    valid_h: int = 0
    valid_w: int = 0
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    jpeg: bytes | None = None  # set instead of pixels: to be decoded on the device
    orientation: int = 1  # EXIF orientation still to apply to the decoded `jpeg`


class DecodeDataset(torch.utils.data.Dataset):
    """Decodes and preprocesses files by position; a bad file yields an error, not a raise.

    With `jpeg_bytes`, JPEGs that a device decoder takes are only read and their headers
    checked (see :func:`load_image_or_jpeg`): the worker's share of the work shrinks to
    file reading, and decoding and resizing happen in batches on the device.
    """

    def __init__(self, paths: list[str], preprocess: Preprocessor, max_pixels: int = MAX_PIXELS,
                 jpeg_bytes: bool = False) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.jpeg_bytes = jpeg_bytes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        if not self.jpeg_bytes:
            return self.decode_on_host(i)
        try:
            got = load_image_or_jpeg(self.paths[i], self.max_pixels, draft_size=self.preprocess.image_size)
        except BadImageError as e:
            return Decoded(i, error=str(e))
        if isinstance(got, EncodedJpeg):
            return Decoded(i, width=got.width, height=got.height, format="JPEG", jpeg=got.data,
                           orientation=got.orientation)
        return self._canvas(i, got)

    def decode_on_host(self, i: int) -> Decoded:
        """File `i` decoded and preprocessed here, whatever its format: also the fallback
        for a JPEG the device decoder rejects."""
        try:
            return self._canvas(i, load_image(self.paths[i], self.max_pixels, draft_size=self.preprocess.image_size))
        except BadImageError as e:
            return Decoded(i, error=str(e))

    def _canvas(self, i: int, img: DecodedImage) -> Decoded:
        pixels, h, w = self.preprocess(img.image)
        return Decoded(i, pixels, h, w, img.width, img.height, img.format)


@dataclass
class DecodedBatch:
    """A collated batch: stacked canvases of the good files, the JPEGs still to decode on
    the device, and the failures.

    The JPEGs' bytes travel packed in one tensor (one shared-memory block from a loader
    worker, not one per file); :meth:`jpeg_tensors` gives each file's bytes as a view.
    """

    indices: list[int]
    pixels: torch.Tensor  # (N, S, S, 3) uint8
    heights: torch.Tensor  # (N,)
    widths: torch.Tensor
    items: list[Decoded]
    failures: list[Decoded]
    jpegs: list[Decoded] = field(default_factory=list)  # facts and orientation; bytes in jpeg_data
    jpeg_data: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    jpeg_spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) per jpeg

    def jpeg_tensors(self) -> list[torch.Tensor]:
        """Each pending JPEG's bytes, a 1-D uint8 view into `jpeg_data`."""
        return [self.jpeg_data[start:start + length] for start, length in self.jpeg_spans]

    def pin_memory(self) -> DecodedBatch:
        """Called by a pinning DataLoader: page-locked canvases copy to a GPU asynchronously.

        Without this method the loader would hand the dataclass back unpinned.
        """
        self.pixels = self.pixels.pin_memory()
        return self


def collate_decoded(items: list[Decoded]) -> DecodedBatch:
    """Stack the canvases of a batch, pack its pending JPEGs, keep failures aside with their reasons."""
    good = [d for d in items if d.error is None and d.jpeg is None]
    pending = [d for d in items if d.error is None and d.jpeg is not None]
    bad = [d for d in items if d.error is not None]
    if good:
        pixels = torch.from_numpy(np.stack([d.pixels for d in good]))
    else:
        pixels = torch.empty(0, 0, 0, 3, dtype=torch.uint8)
    lengths = [len(d.jpeg) for d in pending]
    offsets = np.cumsum([0, *lengths[:-1]]).tolist() if pending else []
    data = np.empty(sum(lengths), np.uint8)
    for d, start, length in zip(pending, offsets, lengths):
        data[start:start + length] = np.frombuffer(d.jpeg, np.uint8)
    return DecodedBatch(
        indices=[d.index for d in good],
        pixels=pixels,
        heights=torch.tensor([d.valid_h for d in good], dtype=torch.int64),
        widths=torch.tensor([d.valid_w for d in good], dtype=torch.int64),
        items=[Decoded(d.index, None, d.valid_h, d.valid_w, d.width, d.height, d.format) for d in good],
        failures=bad,
        jpegs=[replace(d, jpeg=None) for d in pending],
        jpeg_data=torch.from_numpy(data),
        jpeg_spans=list(zip(offsets, lengths)),
    )


def default_workers(requested: int | None = None) -> int:
    """Decode worker processes: as requested, else one per core, at most 4 (beyond that the
    model, not decoding, is the bottleneck of a single process)."""
    return min(4, os.cpu_count() or 1) if requested is None else requested


def decode_loader(dataset: DecodeDataset, workers: int, pin: bool, batch_size: int | None = None,
                  batch_sampler: torch.utils.data.Sampler[list[int]] | None = None,
                  ) -> torch.utils.data.DataLoader[DecodedBatch]:
    """Batches of `dataset` decoded in `workers` processes, a few batches ahead; `pin` puts
    the canvases in pinned memory for non-blocking copies to a GPU. `batch_sampler`, when
    given, replaces consecutive batches of `batch_size`."""
    batching = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
    return torch.utils.data.DataLoader(dataset, num_workers=workers, collate_fn=collate_decoded, pin_memory=pin,
                                       prefetch_factor=4 if workers else None, **batching)
