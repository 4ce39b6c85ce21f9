"""The catalog: SQLite (WAL) through SQLAlchemy 2.0, the source of truth of an index.

Each image row has a stable id (AUTOINCREMENT: ids are never reused, so a stale ANN
index can never point a removed id at a new image). Vectors live in their own table,
written in the same transaction as their row.

Every write transaction bumps a *generation* counter and stamps the rows it touched;
removals leave a tombstone with the generation. An ANN index saved at generation g can
therefore catch up by replaying only what changed after g, in any process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON, Float, ForeignKey, Integer, LargeBinary, String, Text, create_engine, delete,
    event, func, select, update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from .errors import RetrievalError

__all__ = ["Catalog", "ImageRow", "FileRecord", "Changes", "SCHEMA_VERSION", "STATUS_OK", "STATUS_FAILED"]

SCHEMA_VERSION = 1
STATUS_OK = "ok"
STATUS_FAILED = "failed"


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    """One file, indexed or failed."""

    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True, index=True)
    content_hash: Mapped[str] = mapped_column(String(32), index=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(8), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gen: Mapped[int] = mapped_column(Integer, index=True)
    added_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class VectorRow(Base):
    """The embedding of an ok image, float32 bytes."""

    __tablename__ = "vectors"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Tombstone(Base):
    """An id removed at a generation, so caches can forget it."""

    __tablename__ = "tombstones"

    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gen: Mapped[int] = mapped_column(Integer, index=True)


class Setting(Base):
    """Key-value facts about the bundle: schema version, manifest, generation."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass
class FileRecord:
    """What the indexer learnt about one file, ready to be written.

    `vector` None on an ok record with an `id` keeps the stored vector (a move).
    `metadata` None keeps the stored metadata.
    """

    path: str
    content_hash: str
    size: int
    mtime_ns: int
    status: str = STATUS_OK
    error: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    vector: np.ndarray | None = None
    metadata: dict[str, Any] | None = None
    id: int | None = None


@dataclass
class Changes:
    """What happened after a generation: vectors to (re)insert and ids to drop."""

    generation: int
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    vectors: np.ndarray | None = None
    removed: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


class Catalog:
    """Access to one bundle's SQLite file. Safe to open from several processes."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise RetrievalError(f"no catalog at {self.path}")
        self.engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self.engine, "connect", _sqlite_pragmas)
        event.listen(self.engine, "begin", _begin)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        if create:
            Base.metadata.create_all(self.engine)
            with self.sessions.begin() as s:
                if s.get(Setting, "schema_version") is None:
                    s.add_all([Setting(key="schema_version", value=str(SCHEMA_VERSION)),
                               Setting(key="generation", value="0")])
        version = int(self.get_setting("schema_version") or 0)
        if version != SCHEMA_VERSION:
            raise RetrievalError(
                f"catalog {self.path} has schema version {version}, this retrieve reads {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        with self.sessions() as s:
            row = s.get(Setting, key)
            return row.value if row else None

    def set_setting(self, key: str, value: str) -> None:
        with self.sessions.begin() as s:
            s.merge(Setting(key=key, value=value))

    def get_json(self, key: str) -> Any:
        raw = self.get_setting(key)
        return json.loads(raw) if raw is not None else None

    def generation(self) -> int:
        return int(self.get_setting("generation") or 0)

    # ------------------------------------------------------------------ reads

    def rows_under(self, roots: Sequence[str]) -> dict[str, ImageRow]:
        """All rows whose path is one of `roots` or lies below one of them."""
        out: dict[str, ImageRow] = {}
        with self.sessions() as s:
            for root in roots:
                prefix = root.rstrip("/") + "/"
                q = select(ImageRow).where(
                    (ImageRow.path == root) | (func.substr(ImageRow.path, 1, len(prefix)) == prefix)
                )
                out.update({r.path: r for r in s.scalars(q)})
        return out

    def _in_chunks(self, query: Callable[[list[Any]], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Run `query(chunk)` over `values` in chunks (SQLite caps bound parameters)."""
        values = list(values)
        with self.sessions() as s:
            for i in range(0, len(values), 500):
                yield from s.scalars(query(values[i:i + 500]))

    def rows_by_path(self, paths: Iterable[str]) -> dict[str, ImageRow]:
        return {r.path: r for r in self._in_chunks(lambda c: select(ImageRow).where(ImageRow.path.in_(c)), paths)}

    def rows_by_id(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        ids = (int(i) for i in ids)
        return {r.id: r for r in self._in_chunks(lambda c: select(ImageRow).where(ImageRow.id.in_(c)), ids)}

    def vectors(self, ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Stored vectors by id; ids without one (failed, removed) are absent."""
        ids = (int(i) for i in ids)
        rows = self._in_chunks(lambda c: select(VectorRow).where(VectorRow.image_id.in_(c)), ids)
        return {v.image_id: np.frombuffer(v.data, np.float32) for v in rows}

    def ok_ids_with_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """For each content hash, one ok image that has it (to reuse its vector)."""
        hashes = list(set(hashes))
        out: dict[str, int] = {}
        with self.sessions() as s:
            for i in range(0, len(hashes), 500):
                q = select(ImageRow.content_hash, func.min(ImageRow.id)).where(
                    ImageRow.content_hash.in_(hashes[i:i + 500]), ImageRow.status == STATUS_OK
                ).group_by(ImageRow.content_hash)
                out.update(dict(s.execute(q).all()))
        return out

    def ids_matching(self, conditions: Sequence[Any]) -> np.ndarray:
        """Ids of ok images meeting all SQL conditions (see :class:`retrieval.filters.Filter`)."""
        q = select(ImageRow.id).where(ImageRow.status == STATUS_OK, *conditions)
        with self.sessions() as s:
            return np.fromiter(s.scalars(q), np.int64)

    def update_tags(self, ids: Sequence[int], add: Sequence[str], remove: Sequence[str]) -> int:
        """Add and remove tags (kept sorted in metadata["tags"]); returns rows changed."""
        changed = 0
        with self.sessions.begin() as s:
            for row in s.scalars(select(ImageRow).where(ImageRow.id.in_([int(i) for i in ids]))):
                tags = (set(row.meta.get("tags", [])) | set(add)) - set(remove)
                meta = dict(row.meta)
                meta["tags"] = sorted(tags)
                if meta != row.meta:
                    row.meta = meta
                    changed += 1
        return changed

    def hash_groups(self, min_size: int = 2) -> Iterator[list[tuple[int, str]]]:
        """Groups of ok images sharing a content hash, streamed group by group."""
        with self.sessions() as s:
            dup = (select(ImageRow.content_hash).where(ImageRow.status == STATUS_OK)
                   .group_by(ImageRow.content_hash).having(func.count() >= min_size).subquery())
            q = (select(ImageRow.content_hash, ImageRow.id, ImageRow.path)
                 .where(ImageRow.status == STATUS_OK, ImageRow.content_hash.in_(select(dup)))
                 .order_by(ImageRow.content_hash, ImageRow.id))
            group: list[tuple[int, str]] = []
            current = None
            for h, i, p in s.execute(q):
                if h != current and group:
                    yield group
                    group = []
                current = h
                group.append((i, p))
            if group:
                yield group

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            q = select(ImageRow.status, func.count()).group_by(ImageRow.status)
            return {status: n for status, n in s.execute(q).all()}

    def failed(self, limit: int | None = None) -> list[ImageRow]:
        with self.sessions() as s:
            q = select(ImageRow).where(ImageRow.status == STATUS_FAILED).order_by(ImageRow.path)
            return list(s.scalars(q.limit(limit) if limit else q))

    def iter_vectors(self, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All ok vectors in id order, in (ids, matrix) blocks."""
        last = 0
        while True:
            with self.sessions() as s:
                q = (select(VectorRow.image_id, VectorRow.data)
                     .where(VectorRow.image_id > last).order_by(VectorRow.image_id).limit(batch))
                rows = s.execute(q).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            yield ids, np.stack([np.frombuffer(r[1], np.float32) for r in rows])
            last = int(ids[-1])

    def changes_since(self, gen: int) -> Changes:
        """Everything an index at generation `gen` must apply to be current.

        Read in one transaction, so the result is a consistent snapshot even while
        another process writes.
        """
        with self.sessions() as s, s.begin():
            now = int(s.get(Setting, "generation").value)
            if now == gen:
                return Changes(now)
            rows = s.execute(
                select(ImageRow.id, ImageRow.status, VectorRow.data)
                .outerjoin(VectorRow, VectorRow.image_id == ImageRow.id)
                .where(ImageRow.gen > gen).order_by(ImageRow.id)
            ).all()
            dropped = s.scalars(select(Tombstone.image_id).where(Tombstone.gen > gen)).all()
        ok = [(r[0], r[2]) for r in rows if r[1] == STATUS_OK and r[2] is not None]
        stale = [r[0] for r in rows if r[1] != STATUS_OK or r[2] is None]
        return Changes(
            generation=now,
            ids=np.array([i for i, _ in ok], np.int64),
            vectors=np.stack([np.frombuffer(d, np.float32) for _, d in ok]) if ok else None,
            removed=np.array(list(dropped) + stale, np.int64),
        )

    # ------------------------------------------------------------------ writes

    def apply(self, records: Sequence[FileRecord] = (), removals: Sequence[int] = (),
              touches: Sequence[tuple[int, int]] = ()) -> list[int]:
        """Write one batch atomically: upserts, removals, and mtime-only refreshes.

        Returns the ids of `records`, in order. Rows and their vectors commit together
        or not at all; the generation moves forward by one.
        """
        now = time.time()
        ids: list[int] = []
        with self.sessions.begin() as s:
            gen_row = s.get(Setting, "generation")
            gen = int(gen_row.value) + 1
            gen_row.value = str(gen)
            for rec in records:
                row = s.get(ImageRow, rec.id) if rec.id is not None else None
                if row is None:
                    row = ImageRow(path=rec.path, added_at=now, meta=rec.metadata or {})
                    s.add(row)
                elif rec.metadata is not None:
                    row.meta = rec.metadata
                row.path, row.content_hash, row.size, row.mtime_ns = rec.path, rec.content_hash, rec.size, rec.mtime_ns
                row.status, row.error = rec.status, rec.error
                if rec.status == STATUS_OK and rec.vector is None and row.id is not None:
                    pass  # a move: dimensions and vector stay as they are
                else:
                    row.width, row.height, row.format = rec.width, rec.height, rec.format
                row.gen, row.updated_at = gen, now
                s.flush()
                if rec.status != STATUS_OK:
                    s.execute(delete(VectorRow).where(VectorRow.image_id == row.id))
                elif rec.vector is not None:
                    s.merge(VectorRow(image_id=row.id, data=np.ascontiguousarray(rec.vector, np.float32).tobytes()))
                ids.append(row.id)
            if removals:
                rm = [int(i) for i in removals]
                s.execute(delete(VectorRow).where(VectorRow.image_id.in_(rm)))
                s.execute(delete(ImageRow).where(ImageRow.id.in_(rm)))
                for i in rm:
                    s.merge(Tombstone(image_id=i, gen=gen))
            for image_id, mtime_ns in touches:
                s.execute(update(ImageRow).where(ImageRow.id == image_id).values(mtime_ns=mtime_ns))
        return ids

    def set_metadata(self, image_id: int, metadata: dict[str, Any]) -> None:
        with self.sessions.begin() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise RetrievalError(f"no image with id {image_id}")
            row.meta = metadata


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers query while one writer adds; busy_timeout waits out short locks.

    The driver's own transaction handling is switched off (it would BEGIN only before
    writes), so that :func:`_begin` makes every session one snapshot, reads included.
    """
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")
