"""Deciding what an indexing run must do, before any image is decoded.

Mark and sweep over (path, size, mtime): an unchanged file costs one stat; a changed
one costs a hash; only new content is decoded and embedded. A file whose content is
already indexed reuses that vector, and a vanished file whose content reappears under
a new path keeps its id (a move). Anything but a regular file within the size limit is
recorded as failed from its stat, without being opened (a FIFO would block forever).
Paths the catalog's exclusions match (:mod:`.exclusions`) are left out as if absent, so
an excluded image still indexed is swept; files of unknown types are set aside to be
reported.

The hash taken here only decides what changed; what is stored with a new vector is the
hash of the bytes the decode worker read (see :mod:`.run`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..catalog import STATUS_FAILED, STATUS_OK, Catalog, FileRecord, ImageRow
from ..errors import BadImageError
from ..images.files import UNKNOWN_TYPE, file_digest, is_image_path, os_reason, refusal
from ..options import Progress
from .exclusions import Exclusions

__all__ = ["FileState", "Plan", "plan_sync"]

_HASH_THREADS = min(8, os.cpu_count() or 1)
_HASH_BLOCK = 4096



@dataclass
class FileState:
    """A file as found on disk now."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str = ""


@dataclass
class Plan:
    """The work of one run, grouped by what it costs."""

    unchanged: int = 0
    touches: list[tuple[int, int]] = field(default_factory=list)  # (id, new mtime): same bytes
    moves: list[FileRecord] = field(default_factory=list)  # existing id, new path, same vector
    copies: list[tuple[FileRecord, int]] = field(default_factory=list)  # new/changed file, id to copy from
    embed: list[tuple[FileState, ImageRow | None]] = field(default_factory=list)  # one per new content
    twins: dict[str, list[tuple[FileState, ImageRow | None]]] = field(default_factory=dict)  # hash -> same content
    failed: list[FileRecord] = field(default_factory=list)  # could not even be read
    removals: list[int] = field(default_factory=list)
    removed_paths: list[str] = field(default_factory=list)
    unstorable: list[str] = field(default_factory=list)  # names that are not valid UTF-8 (shown escaped)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) discovery left out
    unknown: list[str] = field(default_factory=list)  # files of types that are not read
    excluded: int = 0  # files found that an exclusion leaves out


def plan_sync(
    catalog: Catalog,
    files: Iterable[str],
    existing: dict[str, ImageRow],
    sweep: bool,
    progress: Progress | None = None,
    skipped: Iterable[tuple[str, str]] = (),
) -> Plan:
    """Classify every file against the catalog.

    Args:
        files: absolute paths found now.
        existing: catalog rows that may correspond (those under the indexed roots).
        sweep: when True, rows in `existing` whose file was not found are removed.
        skipped: (path, reason) of what discovery left out, carried to the report
            (:func:`~retrieval.images.files.discover`'s `on_skip`); files of unknown
            types among them go to the plan's `unknown`.
    """
    excluded = Exclusions(catalog.exclusions())
    plan = Plan()
    for path, why in skipped:
        if excluded.excludes(path):
            continue
        if why == UNKNOWN_TYPE:
            plan.unknown.append(path)
        else:
            plan.skipped.append((path, why))
    changed: list[tuple[FileState, ImageRow | None]] = []
    seen: set[str] = set()
    files = list(dict.fromkeys(files))
    if excluded:
        kept = [path for path in files if not excluded.excludes(path)]
        plan.excluded, files = len(files) - len(kept), kept
    for n, path in enumerate(files, 1):
        seen.add(path)
        if not _storable(path):
            plan.unstorable.append(os.fsencode(path).decode("utf-8", "backslashreplace"))
            continue
        row = existing.get(path)
        try:
            st = os.stat(path)
        except OSError as e:
            plan.failed.append(_failed_record(path, row, os_reason(e)))
            continue
        state = FileState(path, st.st_size, st.st_mtime_ns)
        if row is not None and row.size == st.st_size and row.mtime_ns == st.st_mtime_ns:
            plan.unchanged += 1
        elif not is_image_path(path):
            plan.failed.append(_failed_record(path, row, "unsupported file type", state))
        elif (why := refusal(st)) is not None:
            plan.failed.append(_failed_record(path, row, why, state))
        else:
            changed.append((state, row))
        if progress and (n % 256 == 0 or n == len(files)):
            progress("scanning", n, len(files))

    hashed: list[tuple[FileState, ImageRow | None]] = []
    for n, (state, row), digest in _digests(changed):
        if isinstance(digest, str):
            state.content_hash = digest
            hashed.append((state, row))
        elif isinstance(digest, OSError):
            plan.failed.append(_failed_record(state.path, row, os_reason(digest), state))
        else:  # no longer a regular file, or grew past the limit
            plan.failed.append(_failed_record(state.path, row, str(digest), state))
        if progress:
            progress("hashing", n, len(changed))

    vanished = {r.content_hash: r for p, r in existing.items() if p not in seen} if sweep else {}
    known = catalog.ok_ids_with_hash([s.content_hash for s, _ in hashed])
    for state, row in hashed:
        if row is not None and row.content_hash == state.content_hash and row.status == STATUS_OK:
            plan.touches.append((row.id, state.mtime_ns))
            plan.unchanged += 1
            continue
        mover = vanished.get(state.content_hash) if row is None else None
        if mover is not None and mover.status == STATUS_OK:
            del vanished[state.content_hash]
            plan.moves.append(_record(state, mover.id))
            continue
        if state.content_hash in known:
            plan.copies.append((_record(state, row.id if row else None), known[state.content_hash]))
            continue
        if state.content_hash in plan.twins:
            plan.twins[state.content_hash].append((state, row))
            continue
        plan.twins[state.content_hash] = []
        plan.embed.append((state, row))

    if sweep:
        moved = {m.id for m in plan.moves}
        gone = [r for p, r in existing.items() if p not in seen and r.id not in moved]
        plan.removals = [r.id for r in gone]
        plan.removed_paths = [r.path for r in gone]
    return plan


def _storable(path: str) -> bool:
    """SQLite text must be valid UTF-8; names with undecodable bytes cannot be stored."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _record(state: FileState, image_id: int | None) -> FileRecord:
    return FileRecord(path=state.path, content_hash=state.content_hash, size=state.size,
                      mtime_ns=state.mtime_ns, id=image_id)


def _failed_record(path: str, row: ImageRow | None, reason: str, state: FileState | None = None) -> FileRecord:
    return FileRecord(path=path, content_hash=state.content_hash if state else "",
                      size=state.size if state else 0, mtime_ns=state.mtime_ns if state else 0,
                      status=STATUS_FAILED, error=reason, id=row.id if row else None)


def _digests(changed: list[tuple[FileState, ImageRow | None]],
             ) -> Iterator[tuple[int, tuple[FileState, ImageRow | None], str | OSError | BadImageError]]:
    """(position from 1, entry, its content hash or why it could not be read), in order.

    Files are hashed by a few threads (reading and BLAKE2b both release the GIL): on a GPU
    machine a new collection's hashing in one thread would take as long as embedding it.
    Submitted a block at a time, so a million new files do not queue a million futures.
    """
    def digest(path: str) -> str | OSError | BadImageError:
        try:
            return file_digest(path)
        except (OSError, BadImageError) as e:
            return e

    with ThreadPoolExecutor(_HASH_THREADS) as pool:
        for start in range(0, len(changed), _HASH_BLOCK):
            block = changed[start:start + _HASH_BLOCK]
            for n, (entry, got) in enumerate(zip(block, pool.map(digest, [s.path for s, _ in block])), start + 1):
                yield n, entry, got
