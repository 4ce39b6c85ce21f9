"""Indexed images as pictures to show: each original's bytes, and JPEG thumbnails of a few
fixed sizes cached inside the bundle.

A front end names an image by its id only. The file read is the one the catalog holds for
that id, opened as indexing opens files (a regular file, bounded), and its bytes must still
hash to the content the catalog recorded: a file changed or swapped since it was indexed
(for a link to another file, say) is refused, so nothing but indexed content is served.

Thumbnails are keyed by content hash and size, so copies share one and an image whose
content changes gets a new one; the hash is also their ETag. A bundle that cannot be written
(read-only, full disk) serves them uncached.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .catalog import ImageRow
from .errors import BadImageError, BadQueryError
from .images.decode import load_image
from .images.files import FileBytes, read_file

__all__ = ["THUMBNAIL_FOLDER", "THUMBNAIL_SIZES", "Picture", "original", "render_thumbnail", "thumbnail"]

THUMBNAIL_SIZES = (64, 128, 256, 512)
"""The long sides a thumbnail may have: a fixed few, so the cache holds at most four files
an image, whatever sizes clients ask for."""
THUMBNAIL_FOLDER = "thumbnails"
_JPEG_QUALITY = 85
_MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
                "BMP": "image/bmp", "TIFF": "image/tiff"}


@dataclass(frozen=True)
class Picture:
    """Bytes to send, their media type, and a tag that changes whenever they do."""

    data: bytes
    media_type: str
    etag: str


def original(row: ImageRow) -> Picture:
    """The indexed file's bytes, as they were indexed.

    Raises:
        BadImageError: the file is gone, unreadable, no longer a regular file, or changed.
    """
    raw = _indexed_bytes(row)
    return Picture(raw.data, _MEDIA_TYPES.get((row.format or "").upper(), "application/octet-stream"),
                   row.content_hash)


def thumbnail(bundle: Path, row: ImageRow, size: int) -> Picture:
    """A JPEG of the image fitted in `size` x `size`, from the cache or made (and cached) now.

    Raises:
        BadQueryError: `size` is not one of THUMBNAIL_SIZES.
        BadImageError: no cached copy, and the file is gone, changed or cannot be decoded.
    """
    if isinstance(size, bool) or size not in THUMBNAIL_SIZES:
        raise BadQueryError(f"thumbnail size must be one of {', '.join(map(str, THUMBNAIL_SIZES))}, not {size!r}")
    etag = f"{row.content_hash}-{size}"
    cached = bundle / THUMBNAIL_FOLDER / str(size) / f"{row.content_hash}.jpg"
    with contextlib.suppress(OSError):
        return Picture(cached.read_bytes(), "image/jpeg", etag)
    data = render_thumbnail(_indexed_bytes(row), size)
    _store(cached, data)
    return Picture(data, "image/jpeg", etag)


def render_thumbnail(source: str | FileBytes, size: int) -> bytes:
    """A JPEG of `source` (a path or bytes read) upright, fitted in `size` x `size`: JPEGs
    decode at a reduced scale first, so a thumbnail of a large photo costs little.

    Raises:
        BadImageError: it cannot be read or decoded.
    """
    image = load_image(source, draft_size=size).image
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _indexed_bytes(row: ImageRow) -> FileBytes:
    raw = read_file(row.path)
    if raw.digest != row.content_hash:
        raise BadImageError("the file changed since it was indexed (index it again to show it)")
    return raw


def _store(path: Path, data: bytes) -> None:
    """Write `path` atomically (a reader never sees half a JPEG); give up silently when the
    bundle cannot be written: the thumbnail is then served uncached."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
