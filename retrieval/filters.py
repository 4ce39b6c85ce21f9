"""Search filters on what the catalog knows: path, type, size, dates, tags, metadata, and
what the photos' EXIF said (when and where they were taken, with which camera).

A :class:`Filter` becomes SQL conditions on the images table; the Engine turns the
matching ids into an ID selector for the ANN search, so a filtered query still returns
k results whenever k images match.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal_column, or_, select, true

from .catalog import ImageRow
from .catalog.metadata import KEY_PATTERN
from .errors import RetrievalError

__all__ = ["Filter", "parse_date", "parse_near", "parse_taken"]

_KM_PER_DEGREE = 6371.0088 * math.pi / 180  # along a meridian, on the mean Earth sphere

@dataclass(frozen=True)
class Filter:
    """Conditions that all must hold. Empty fields do not filter.

    Attributes:
        path_glob: shell-style pattern on the full path ("*/holidays/*.jpg").
        folders: the image lies below one of these folders.
        formats: decoded format names, case-insensitive ("jpeg", "png").
        min_bytes, max_bytes: file size range, inclusive.
        since, until: file modification time range, inclusive.
        tags: every one of these tags is set.
        metadata: user metadata key = value, for each item.
        taken_since, taken_until: when the photo was taken (EXIF), inclusive, by the
            camera's clock (naive date-times); photos without a date never match.
        camera: a case-insensitive part of "make model" ("x100", "canon eos").
        near: (latitude, longitude, km): taken within km of that point (EXIF GPS).
    """

    path_glob: str | None = None
    folders: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    min_bytes: int | None = None
    max_bytes: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    taken_since: dt.datetime | None = None
    taken_until: dt.datetime | None = None
    camera: str | None = None
    near: tuple[float, float, float] | None = None

    def __bool__(self) -> bool:
        """An empty filter is no filter: false, so callers can write ``if where:``."""
        return self != Filter()

    @classmethod
    def of(cls, where: Filter | Mapping[str, Any] | None) -> Filter | None:
        """Accept a Filter, or a plain mapping meaning metadata equality."""
        if where is None or isinstance(where, Filter):
            return where
        return cls(metadata=dict(where))

    def conditions(self) -> list[ColumnElement[bool]]:
        """SQLAlchemy conditions on ImageRow; every value is bound, never formatted in."""
        c: list[ColumnElement[bool]] = []
        if self.path_glob:
            c.append(ImageRow.path.op("GLOB")(self.path_glob))
        if self.folders:
            prefixes = [os.path.abspath(f).rstrip("/") + "/" for f in self.folders]
            c.append(or_(*(func.substr(ImageRow.path, 1, len(p)) == p for p in prefixes)))
        if self.formats:
            c.append(func.upper(ImageRow.format).in_([f.upper().replace("JPG", "JPEG") for f in self.formats]))
        if self.min_bytes is not None:
            c.append(ImageRow.size >= self.min_bytes)
        if self.max_bytes is not None:
            c.append(ImageRow.size <= self.max_bytes)
        if self.since is not None:
            c.append(ImageRow.mtime_ns >= int(self.since.timestamp() * 1e9))
        if self.until is not None:
            c.append(ImageRow.mtime_ns <= int(self.until.timestamp() * 1e9))
        for tag in self.tags:
            each = func.json_each(ImageRow.meta, "$.tags").table_valued("value")
            c.append(exists(select(literal_column("1")).select_from(each).where(each.c.value == tag)))
        for key, value in self.metadata.items():
            if not KEY_PATTERN.fullmatch(key):
                raise RetrievalError(f"metadata key {key!r}: use letters, digits, _ and - only")
            if not isinstance(value, (str, int, float, bool)):
                raise RetrievalError(f"metadata filter on {key!r}: value must be a string, number or bool")
            c.append(func.json_extract(ImageRow.meta, "$." + key) == value)
        if self.taken_since is not None:
            c.append(ImageRow.taken_at >= _taken_text(self.taken_since))
        if self.taken_until is not None:
            c.append(ImageRow.taken_at <= _taken_text(self.taken_until))
        if self.camera:
            name = func.lower(func.coalesce(ImageRow.camera_make, "") + " " + func.coalesce(ImageRow.camera_model, ""))
            c.append(func.instr(name, self.camera.lower()) > 0)
        if self.near is not None:
            c.append(_within(*self.near))
        return c or [true()]


def _taken_text(when: dt.datetime) -> str:
    """A date-time as the catalog stores when a photo was taken (ISO text, camera clock)."""
    if when.tzinfo is not None:
        raise RetrievalError("a taken-at bound is the camera's local time: give it without a time zone")
    return when.isoformat(timespec="seconds")


def _within(lat: float, lon: float, km: float) -> ColumnElement[bool]:
    """Photos whose GPS position lies within `km` of (lat, lon), in plain SQL arithmetic.

    SQLite has no trigonometry everywhere, so the distance is the equirectangular one at
    the two points' mid-latitude, whose cosine is expanded to second order around `lat`:
    against the great-circle distance the error is under 0.01% at 100 km, 0.1% at 300 km
    and 1.3% at 1,000 km (up to 70 degrees of latitude). A bounding box on the latitude
    comes first, so far-away rows cost one comparison.
    """
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < km <= 20_000):
        raise RetrievalError(f"near {lat},{lon},{km}: latitude -90..90, longitude -180..180, "
                             "radius above 0 and at most 20,000 km")
    lat0 = math.radians(lat)
    half = (ImageRow.gps_lat - lat) * (math.pi / 360)  # half the latitude difference, in radians
    cos_mid = math.cos(lat0) - math.sin(lat0) * half - math.cos(lat0) / 2 * half * half
    dlon = func.abs(ImageRow.gps_lon - lon)
    dlon = func.min(dlon, 360 - dlon)
    dy, dx = (ImageRow.gps_lat - lat) * _KM_PER_DEGREE, dlon * _KM_PER_DEGREE * cos_mid
    span = km / _KM_PER_DEGREE
    return and_(ImageRow.gps_lat.between(lat - span, lat + span), ImageRow.gps_lon.is_not(None),
                dy * dy + dx * dx <= km * km)


def parse_taken(text: str, end_of_day: bool = False) -> dt.datetime:
    """A date or date-time by the camera's clock (no time zone); a bare date is the start
    of that day, or with `end_of_day` its last second (so an upper bound includes it)."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RetrievalError(f"{text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    if value.tzinfo is not None:
        raise RetrievalError(f"{text!r}: when a photo was taken is the camera's local time; give no time zone")
    if end_of_day and len(text.strip()) <= 10:
        value = value.replace(hour=23, minute=59, second=59)
    return value


def parse_near(text: str) -> tuple[float, float, float]:
    """``LAT,LON,KM`` as three numbers (checked when the filter is used)."""
    parts = text.split(",")
    try:
        lat, lon, km = (float(p) for p in parts)
    except ValueError:
        raise RetrievalError(f"{text!r}: give LAT,LON,KM, e.g. 48.8584,2.2945,5") from None
    if not all(math.isfinite(v) for v in (lat, lon, km)):
        raise RetrievalError(f"{text!r}: give LAT,LON,KM as finite numbers")
    return lat, lon, km


def parse_date(text: str) -> dt.datetime:
    """ISO date or date-time, local time when no zone is given."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RetrievalError(f"{text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    return value if value.tzinfo else value.astimezone()
