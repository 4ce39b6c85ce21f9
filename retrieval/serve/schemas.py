"""Request and response bodies of the API, as pydantic models (they make /docs).

Each request model checks the ranges a client may send; the Engine checks the rest (a
vector's size, an id that does not exist) and its errors become 4xx answers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..filters import Filter, parse_date
from ..query import MAX_K

if TYPE_CHECKING:
    from ..browse import ImageInfo, Page
    from ..query import Hit

__all__ = ["FilterSpec", "HitOut", "ImageOut", "IndexJobBody", "PageOut", "RecommendBody", "RemoveBody",
           "SearchBody", "SearchOut", "TagsBody", "hits_out", "metadata_pairs"]

Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class FilterSpec(_Strict):
    """Conditions that all must hold (as `retrieve query`'s filter options)."""

    path: Optional[str] = Field(default=None, description="Glob on the full path, e.g. '*/2024/*'.")
    folders: list[str] = Field(default_factory=list, description="Below one of these folders.")
    types: list[str] = Field(default_factory=list, description="Decoded formats: jpeg, png ...")
    min_size: Optional[int] = Field(default=None, ge=0, description="Bytes, inclusive.")
    max_size: Optional[int] = Field(default=None, ge=0, description="Bytes, inclusive.")
    since: Optional[str] = Field(default=None, description="Modified on or after (YYYY-MM-DD[THH:MM]).")
    until: Optional[str] = Field(default=None, description="Modified on or before.")
    tags: list[str] = Field(default_factory=list, description="Every one of these tags.")
    metadata: dict[str, Scalar] = Field(default_factory=dict, description="Metadata key = value, each.")

    def to_filter(self) -> Filter | None:
        """The engine's Filter (None when nothing filters).

        Raises:
            RetrievalError: a date that does not parse.
        """
        where = Filter(path_glob=self.path, folders=tuple(self.folders), formats=tuple(self.types),
                       min_bytes=self.min_size, max_bytes=self.max_size,
                       since=parse_date(self.since) if self.since else None,
                       until=parse_date(self.until) if self.until else None,
                       tags=tuple(self.tags), metadata=dict(self.metadata))
        return where if where else None

    def key(self) -> str:
        """A canonical text of the filter: searches with equal keys may share a batch."""
        return json.dumps(self.model_dump(), sort_keys=True)


class SearchBody(_Strict):
    """A search by an indexed image's id or by a vector (exactly one of them)."""

    id: Optional[int] = Field(default=None, description="An indexed image (left out of the results).")
    vector: Optional[list[float]] = Field(default=None, description="A vector of the index's dimension.")
    k: int = Field(default=10, ge=1, le=MAX_K)
    filter: Optional[FilterSpec] = None
    dedup: Optional[float] = Field(default=None, ge=-1.0, le=1.0, description="Fold copies at this cosine similarity.")
    rerank: Optional[bool] = Field(default=None, description="Local-feature re-ranking (default: on when kept).")

    @model_validator(mode="after")
    def _one_query(self) -> SearchBody:
        if (self.id is None) == (self.vector is None):
            raise ValueError("give exactly one of id and vector (upload an image to /search/image)")
        return self


class RecommendBody(_Strict):
    liked: list[int] = Field(min_length=1, description="Ids to find more like.")
    disliked: list[int] = Field(default_factory=list, description="Ids to move away from.")
    k: int = Field(default=10, ge=1, le=MAX_K)
    filter: Optional[FilterSpec] = None
    negative_weight: float = Field(default=0.5, ge=0.0, le=10.0)


class HitOut(BaseModel):
    id: int
    score: float
    path: str
    metadata: dict[str, Any]
    duplicates: list[str] = Field(default_factory=list)
    inliers: Optional[int] = None
    region: Optional[list[list[float]]] = None
    photo: Optional[dict[str, Any]] = Field(
        default=None, description="What the image's EXIF says: taken_at, camera_make, camera_model, lens, "
                                  "gps_lat, gps_lon, orientation (null where it says nothing).")


class SearchOut(BaseModel):
    results: list[HitOut]
    took_ms: float = Field(description="Time from request to answer, in the server.")


def hits_out(hits: list[Hit], took_s: float) -> SearchOut:
    return SearchOut(results=[HitOut(id=h.id, score=round(h.score, 6), path=h.path, metadata=h.metadata,
                                     duplicates=list(h.duplicates), inliers=h.inliers,
                                     region=[list(p) for p in h.region] if h.region else None,
                                     photo=h.photo.to_dict() if h.photo else None) for h in hits],
                     took_ms=round(took_s * 1000, 3))


class ImageOut(BaseModel):
    id: int
    path: str
    size: int
    width: Optional[int]
    height: Optional[int]
    format: Optional[str]
    modified: str
    metadata: dict[str, Any]

    @classmethod
    def of(cls, info: ImageInfo) -> ImageOut:
        return cls(id=info.id, path=info.path, size=info.size, width=info.width, height=info.height,
                   format=info.format, modified=info.modified, metadata=info.metadata)


class PageOut(BaseModel):
    images: list[ImageOut]
    total: int
    next_after: Optional[int] = Field(description="`after` for the next page; null on the last.")

    @classmethod
    def of(cls, page: Page) -> PageOut:
        return cls(images=[ImageOut.of(i) for i in page.images], total=page.total, next_after=page.next_after)


class IndexJobBody(_Strict):
    folders: list[str] = Field(min_length=1, max_length=100, description="Folders on the server to index.")


class RemoveBody(_Strict):
    ids: list[int] = Field(min_length=1, max_length=10_000)


class TagsBody(_Strict):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


def metadata_pairs(items: list[str]) -> dict[str, Scalar]:
    """KEY=VALUE query parameters: a value that parses as a JSON scalar is that value
    (a number, true), anything else is text.

    Raises:
        ValueError: an item without '=' or key.
    """
    out: dict[str, Scalar] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r}: expected KEY=VALUE")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[key] = parsed if isinstance(parsed, (str, int, float, bool)) else value
    return out
