"""What a photo's EXIF says about it: when it was taken, with what, and where.

Read at indexing time and stored with the image's row (:class:`~retrieval.catalog.facts.PhotoFacts`),
so that searches can filter on them (:class:`retrieval.filters.Filter`). Only headers are
parsed: Pillow opens an image lazily, and a RAW file's EXIF is its TIFF container's IFD0.
Whatever is missing, malformed or implausible (a zero date, a latitude of 200, a NaN
rational) is left out rather than stored wrong: a photo without a date must not match
``--taken-until 1990``.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import struct
import warnings
from typing import Any

from PIL import ExifTags, Image

from ..catalog.facts import PhotoFacts
from .raw import find_preview

__all__ = ["PhotoFacts", "read_facts"]

_TEXT_LIMIT = 128  # longer "camera names" are not names
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_TAKEN, _DIGITIZED, _LENS_MAKE, _LENS_MODEL = 0x9003, 0x9004, 0xA433, 0xA434
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4


def read_facts(data: bytes) -> PhotoFacts:
    """The EXIF facts of an image file's bytes; empty facts when it has none or they
    cannot be parsed (EXIF is a courtesy of the camera, not a reason to fail a file)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF; odd values are dropped below
            exif = _exif(data)
            return _facts(exif) if exif is not None else PhotoFacts()
    except Exception:  # noqa: BLE001 - any parse failure of untrusted metadata means "no facts"
        return PhotoFacts()


def _exif(data: bytes) -> Image.Exif | None:
    """The file's EXIF: a TIFF-based RAW file's directories, a RAF file's preview's, or
    what Pillow finds in the headers."""
    raw = find_preview(data)
    if raw is not None and data[:2] in (b"II", b"MM"):
        exif = Image.Exif()
        magic = b"II*\x00" if data[:2] == b"II" else b"MM\x00*"  # ORF and RW2 have magics of their own
        exif.load(b"Exif\x00\x00" + magic + data[4:])
        return exif
    with Image.open(io.BytesIO(raw.jpeg if raw is not None else data)) as img:
        return img.getexif()


def _facts(exif: Image.Exif) -> PhotoFacts:
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    orientation = exif.get(_ORIENTATION)
    return PhotoFacts(
        taken_at=_date(sub.get(_TAKEN)) or _date(sub.get(_DIGITIZED)) or _date(exif.get(_DATETIME)),
        camera_make=_text(exif.get(_MAKE)),
        camera_model=_text(exif.get(_MODEL)),
        lens=_text(sub.get(_LENS_MODEL)) or _text(sub.get(_LENS_MAKE)),
        gps_lat=_degrees(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "S", 90),
        gps_lon=_degrees(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "W", 180),
        orientation=orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\0 \t\r\n")
    return value if value and len(value) <= _TEXT_LIMIT and value.isprintable() else None


def _date(value: Any) -> str | None:
    """EXIF's ``YYYY:MM:DD HH:MM:SS`` as ISO text, or None (blank, zero or impossible)."""
    text = _text(value)
    if text is None:
        return None
    try:
        when = dt.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return when.isoformat() if when.year >= 1826 else None  # before the first photograph: a blank clock


def _degrees(value: Any, ref: Any, negative: str, limit: float) -> float | None:
    """Degrees, minutes, seconds (EXIF rationals) as signed decimal degrees, or None."""
    try:
        d, m, s = (float(v) for v in value)
    except (TypeError, ValueError, ZeroDivisionError, struct.error):
        return None
    degrees = d + m / 60 + s / 3600
    if not math.isfinite(degrees) or degrees > limit or min(d, m, s) < 0:
        return None
    sign = -1.0 if _text(ref) == negative else 1.0
    return round(sign * degrees, 7)  # 1 cm: more digits are noise
