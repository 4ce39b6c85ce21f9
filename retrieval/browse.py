"""Browsing an index: what a front end lists about its images, page by page.

Searching needs the model and the ANN index; listing needs neither. A page is a slice of
the ok images in id order, after a given id (keyset paging: an image added or removed
between two requests does not shift the next page), filtered as a search is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .catalog import STATUS_OK, Catalog, ImageRow
from .errors import BadQueryError
from .filters import Filter

__all__ = ["MAX_PAGE", "ImageInfo", "Page", "image_infos", "ok_row", "page"]

MAX_PAGE = 1000
"""The most images one page lists: enough for a screen of thumbnails, small enough that a
page is never a dump of the whole catalog."""


@dataclass(frozen=True)
class ImageInfo:
    """What the catalog knows about one indexed image."""

    id: int
    path: str
    size: int
    width: int | None
    height: int | None
    format: str | None
    modified: str  # the file's modification time, ISO 8601 in UTC
    metadata: dict[str, Any]

    @classmethod
    def of(cls, row: ImageRow) -> ImageInfo:
        modified = dt.datetime.fromtimestamp(row.mtime_ns / 1e9, dt.timezone.utc).isoformat()
        return cls(row.id, row.path, row.size, row.width, row.height, row.format, modified, dict(row.meta or {}))


@dataclass(frozen=True)
class Page:
    """One page of a listing. `next_after` is the `after` of the next page (None: the last)."""

    images: list[ImageInfo]
    total: int  # images matching the filter, on every page
    next_after: int | None


def page(catalog: Catalog, where: Filter | Mapping[str, Any] | None = None, after: int = 0,
         limit: int = 100) -> Page:
    """The ok images with ids above `after` that `where` admits, at most `limit`.

    Raises:
        BadQueryError: `after` is not a non-negative integer, or `limit` not from 1 to MAX_PAGE.
    """
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise BadQueryError(f"after must be an image id (an integer of at least 0), not {after!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise BadQueryError(f"limit must be an integer from 1 to {MAX_PAGE}, not {limit!r}")
    conditions = Filter.of(where)
    sql = conditions.conditions() if conditions else []
    with catalog.snapshot():  # the page and its total from one state of the catalog
        rows = catalog.ok_rows_page(sql, after, limit + 1)  # one more tells whether a next page exists
        total = catalog.count_matching(sql)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page([ImageInfo.of(r) for r in rows], total, rows[-1].id if more else None)


def image_infos(catalog: Catalog, ids: Iterable[int]) -> dict[int, ImageInfo]:
    """The indexed images among `ids`, by id (unknown, removed and failed ids are absent)."""
    return {i: ImageInfo.of(r) for i, r in catalog.rows_by_id(ids).items() if r.status == STATUS_OK}


def ok_row(catalog: Catalog, image_id: int) -> ImageRow | None:
    """The catalog row of an ok image, or None (unknown, removed, failed)."""
    row = catalog.rows_by_id([image_id]).get(image_id)
    return row if row is not None and row.status == STATUS_OK else None
