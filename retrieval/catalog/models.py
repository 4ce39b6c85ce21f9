"""The catalog's tables as typed SQLAlchemy 2.0 ORM classes.

These classes describe the schema at the newest migration (``migrations/versions``);
the migrations, not ``create_all``, are what build and upgrade a real catalog, and a
test checks that the two agree. Change both together: a new column here needs a new
revision there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON, ColumnElement, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, literal, text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "ImageRow", "VectorRow", "LocalFeatureRow", "Tombstone", "Exclusion", "Setting", "SCHEMA_VERSION",
           "STATUS_OK", "STATUS_FAILED", "has_status"]

# The settings value "schema_version" predates the migrations, and retrieve 0.1.0 refuses
# any catalog where it is not 1. It therefore means "the oldest layout a reader must
# understand": revisions that older releases can still read and write correctly (new
# indexes, new tables they never touch) leave it at 1; one that breaks them must raise it.
SCHEMA_VERSION = 1
STATUS_OK = "ok"
STATUS_FAILED = "failed"


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    """One file, indexed or failed."""

    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_ok_hash", "content_hash", "id", sqlite_where=text("status = 'ok'")),
        Index("ix_images_failed", "path", sqlite_where=text("status = 'failed'")),
        Index("ix_images_taken", "taken_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True, index=True)
    content_hash: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8))
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gen: Mapped[int] = mapped_column(Integer, index=True)
    added_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # What the photo's EXIF says (see retrieval.images.exif.PhotoFacts); None when it says nothing
    taken_at: Mapped[str | None] = mapped_column(String(19))  # camera's local time, ISO text
    camera_make: Mapped[str | None] = mapped_column(String)
    camera_model: Mapped[str | None] = mapped_column(String)
    lens: Mapped[str | None] = mapped_column(String)
    gps_lat: Mapped[float | None] = mapped_column(Float)
    gps_lon: Mapped[float | None] = mapped_column(Float)
    orientation: Mapped[int | None] = mapped_column(Integer)


def has_status(status: str) -> ColumnElement[bool]:
    """``images.status = '<status>'``, the value written into the SQL rather than bound.

    SQLite uses the partial indexes (``WHERE status = 'ok'`` / ``'failed'``) only when it
    sees, when it prepares a statement, that the query's condition implies the index's;
    a bound ``status = ?`` hides that and every such query would read the whole table.
    """
    return ImageRow.status == literal(status, literal_execute=True)


class VectorRow(Base):
    """The embedding of an ok image, float32 bytes."""

    __tablename__ = "vectors"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class LocalFeatureRow(Base):
    """The local features of an ok image in an index that keeps them (issue 17): keypoints
    and descriptors in the versioned byte format of :mod:`retrieval.local.features`. Written
    with the image's vector, removed with its row; the local-feature index is their cache."""

    __tablename__ = "local_features"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Tombstone(Base):
    """An id removed at a generation, so caches can forget it."""

    __tablename__ = "tombstones"

    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gen: Mapped[int] = mapped_column(Integer, index=True)


class Exclusion(Base):
    """A shell-style pattern on absolute paths that indexing leaves out: a removal that
    sticks (``retrieve remove``, ``retrieve index --exclude``)."""

    __tablename__ = "exclusions"

    pattern: Mapped[str] = mapped_column(String, primary_key=True)
    added_at: Mapped[float] = mapped_column(Float)


class Setting(Base):
    """Key-value facts about the bundle: schema version, manifest, generation."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)
