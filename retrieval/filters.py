"""Search filters on what the catalog knows: path, type, size, dates, tags, metadata.

A :class:`Filter` becomes SQL conditions on the images table; the Engine turns the
matching ids into an ID selector for the ANN search, so a filtered query still returns
k results whenever k images match.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, exists, func, literal_column, or_, select, true

from .catalog import ImageRow
from .catalog.metadata import KEY_PATTERN
from .errors import RetrievalError

__all__ = ["Filter", "parse_date"]

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
        return c or [true()]


def parse_date(text: str) -> dt.datetime:
    """ISO date or date-time, local time when no zone is given."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RetrievalError(f"{text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    return value if value.tzinfo else value.astimezone()
