"""Catalog <-> cache glue: the ANN index as a cache of the catalog, the bundle's write
lock, and atomic, checksummed files.

The saved index records the catalog generation it reflects and the settings it was
made for. Catching up replays only what changed after that generation (rows with a
newer one, tombstones), so a reader process sees a writer's committed work on its next
search. A missing, foreign, damaged or crafted file is never an error: it is discarded
(with a warning when damaged) and rebuilt from the stored vectors, without reading any
image. Only a holder of the write lock writes files; a reader that cannot (the lock is
taken, the disk is read-only or full) keeps what it rebuilt in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from filelock import FileLock, Timeout

from .ann import AUTO, AnnIndex, check_settings, create_index, load_index, resolve_auto
from .catalog import STATUS_OK, Catalog
from .errors import IndexBusyError, RetrievalError

__all__ = ["AnnCache", "WriteLock", "save_atomic", "read_bundle_file", "read_bundle_header", "remove_leftovers"]

log = logging.getLogger(__name__)

CHECKSUM = "sha256"  # header key; SHA-256 runs at ~1.6 GB/s here (SHA-NI), BLAKE2b at ~0.8
MAX_HEADER = 1 << 20  # a first line longer than this is not a header


class WriteLock:
    """The bundle's write lock: one writer at a time, across processes.

    Holding it is also what makes it safe to clear a killed writer's leftovers (temp
    files of saves that never reached their rename): no one else can be writing one.
    The lock is reentrant within a process.
    """

    def __init__(self, file: Path, timeout: float) -> None:
        self.file = Path(file)
        self._lock = FileLock(str(self.file), timeout=timeout)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock, waiting up to the timeout.

        Raises:
            IndexBusyError: another process held it for the whole timeout.
            RetrievalError: the bundle cannot be written (read-only, permissions).
        """
        try:
            self._lock.acquire()
        except Timeout:  # an OSError too: caught first
            raise IndexBusyError(f"index at {self.file.parent} is being written by another process; "
                                 "try again later") from None
        except OSError as e:
            raise RetrievalError(f"index at {self.file.parent} cannot be written: {e.strerror or e}") from None
        with self._owned():
            yield

    @contextlib.contextmanager
    def held_if_free(self) -> Iterator[bool]:
        """Hold the lock if no one does, without waiting: yields whether it is held.

        Raises:
            OSError: the bundle cannot be written (read-only disk, permissions).
        """
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            acquired = False
        else:
            acquired = True
        if not acquired:
            yield False
            return
        with self._owned():
            yield True

    @contextlib.contextmanager
    def _owned(self) -> Iterator[None]:
        try:
            remove_leftovers(self.file.parent)
            yield
        finally:
            self._lock.release()


class AnnCache:
    """Keeps one in-memory ANN index in step with a catalog.

    Args:
        backend: a backend name, or "auto" (re-decided from the collection size at
            every rebuild; a changed decision triggers one).
        params: backend parameters, as stored in the catalog (none for "auto").
    """

    def __init__(self, file: Path, catalog: Catalog, dim: int, digest: str,
                 backend: str, params: Mapping[str, Any]) -> None:
        self.file, self.catalog, self.dim, self.digest = file, catalog, dim, digest
        self.backend, self.params = backend, dict(params)
        self._index: AnnIndex | None = None
        self.generation = -1
        self.rebuilt_unsaved = False
        self._save_error: OSError | None = None  # why the last save failed: readers stop trying

    def settings(self) -> dict[str, Any]:
        """The index settings as the catalog stores them (also recorded in the file)."""
        return {"backend": self.backend, "params": self.params}

    def require(self, backend: str | None, params: Mapping[str, Any] | None) -> None:
        """Raise unless the index already uses this backend and these parameters (however
        spelled): an existing bundle is switched with :meth:`switch`, never by reopening it."""
        want_backend = backend or self.backend
        same_backend = want_backend == self.backend
        want_params = check_settings(want_backend, params or (self.params if same_backend else {}))
        if (want_backend, want_params) != (self.backend, check_settings(self.backend, self.params)):
            raise RetrievalError(f"the index at {self.file.parent} uses the {self.backend} backend "
                                 f"{dict(self.params) or ''}; switch with `retrieve reindex --backend "
                                 f"{want_backend}` (Engine.reindex), or drop the backend options")

    def sync(self) -> AnnIndex:
        """The index, loaded or built if needed and caught up with the catalog."""
        if self._index is None and not self._load():
            self.rebuild()
        assert self._index is not None
        changes = self.catalog.changes_since(self.generation)
        if changes.generation < self.generation:  # the catalog was replaced by an older copy
            self.rebuild()
        elif changes.generation != self.generation:
            self._index.remove(np.concatenate([changes.removed, changes.ids]))
            if changes.vectors is not None:
                self._index.add(changes.ids, changes.vectors)
            self.generation = changes.generation
        return self._index

    def read(self, lock: WriteLock) -> AnnIndex:
        """The index for a search, caught up with every committed change.

        One this process had to rebuild is saved for the next process if the write lock
        is free; when it is taken, a writer will save. On a read-only or full disk the
        rebuilt index stays in memory, and that is logged once.
        """
        index = self.sync()
        if self.rebuilt_unsaved and self._save_error is None:
            try:
                with lock.held_if_free() as held:
                    if held:
                        self.save()
            except OSError as e:
                self._keep_in_memory(e)
        return index

    def persist(self) -> None:
        """After a write, under the write lock: compact if due, then save.

        A save that fails (full disk) keeps the index in memory with a warning: the
        write is in the catalog, and the next process catches up from the older file.
        """
        self.compact_if_due()
        try:
            self.save()
        except OSError as e:
            self._keep_in_memory(e)

    def switch(self, backend: str | None, params: Mapping[str, Any],
               commit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Rebuild under new settings, which take effect only once their index is saved.

        `backend` None keeps the current one, and so do the parameters when none are
        given. The settings are validated (RetrievalError before any work), the index is
        built in memory and saved, and only then is `commit(settings)` called to store
        them in the catalog. A failure before that leaves the settings, the file and
        this cache as they were; should `commit` itself fail, the saved file no longer
        matches the stored settings and is rebuilt under them on its next load. The
        caller holds the write lock. Returns :meth:`describe`.
        """
        backend = backend or self.backend
        if not params and backend == self.backend:
            params = self.params
        settings = {"backend": backend, "params": check_settings(backend, params, self.dim)}
        index, generation = self._build(settings)
        self._write(index, generation, settings)
        commit(settings)
        self.backend, self.params = backend, settings["params"]
        self._index, self.generation, self.rebuilt_unsaved = index, generation, False
        return self.describe()

    def rebuild(self) -> None:
        """Replace the in-memory index by one built from every stored vector."""
        self._index, self.generation = self._build(self.settings())
        self.rebuilt_unsaved = True

    def compact_if_due(self) -> bool:
        """Rebuild when the backend asks (tombstones, buffer, training) or auto would now pick another."""
        index = self.sync()
        due = index.needs_rebuild() or self._backend_for(self.settings(), index.ntotal)[0] != index.name
        if due:
            self.rebuild()
            self.sync()
        return due

    def save(self) -> None:
        """Write the index atomically; the caller holds the write lock. Raises OSError."""
        index = self.sync()
        self._write(index, self.generation, self.settings())
        self.rebuilt_unsaved, self._save_error = False, None

    def describe(self) -> dict[str, Any]:
        """What `retrieve info` shows: requested and effective backend, parameters, size.

        An index in memory is caught up and described. Otherwise nothing is loaded (nor
        FAISS imported): the saved file's header, if made for these settings, says which
        backend and parameters the next search will load, else the settings say what it
        will build; the size is the catalog's count, which either reaches once caught up.
        """
        if self._index is not None:
            index = self.sync()
            return {"type": self.backend, "effective": index.name, "params": index.params(), "count": index.ntotal}
        count = self.catalog.counts()[STATUS_OK]
        try:
            header = read_bundle_header(self.file)
        except (OSError, ValueError):  # damaged: the next search rebuilds it under the settings
            header = None
        if header is not None and self._fits(header) and isinstance(header.get("backend"), str) \
                and isinstance(header.get("params"), dict):
            effective, params = header["backend"], header["params"]
        else:
            effective, params = self._backend_for(self.settings(), count)
        return {"type": self.backend, "effective": effective, "params": dict(params), "count": count}

    def _backend_for(self, settings: Mapping[str, Any], count: int) -> tuple[str, dict[str, Any]]:
        if settings["backend"] == AUTO:
            return resolve_auto(count, self.dim), {}
        return settings["backend"], settings["params"]

    def _build(self, settings: Mapping[str, Any]) -> tuple[AnnIndex, int]:
        """A fresh index of every stored vector under `settings`, in one bulk step, and
        the generation it reflects; nothing of this cache changes.

        The generation is read before the vectors: anything committed meanwhile is
        replayed again by the next :meth:`sync`, which is harmless (remove, then add).
        """
        generation = self.catalog.generation()
        blocks = list(self.catalog.iter_vectors())
        ids = np.concatenate([b[0] for b in blocks]) if blocks else np.empty(0, np.int64)
        vectors = np.concatenate([b[1] for b in blocks]) if blocks else np.empty((0, self.dim), np.float32)
        name, params = self._backend_for(settings, len(ids))
        index = create_index(name, self.dim, **params)
        index.build(ids, vectors)
        return index, generation

    def _write(self, index: AnnIndex, generation: int, settings: Mapping[str, Any]) -> None:
        header = {"backend": index.name, "dim": self.dim, "generation": generation, "params": index.params(),
                  "settings": dict(settings), "manifest": self.digest, "count": index.ntotal}
        save_atomic(self.file, header, index.to_bytes(), like=self.catalog.path)

    def _load(self) -> bool:
        """Adopt the saved index if it is intact and made for these settings and this
        extractor; False (rebuild) otherwise."""
        try:
            saved = read_bundle_file(self.file)
            if saved is None:
                return False
            header, payload = saved
            if not self._fits(header):
                log.info("%s was made for other index settings or another extractor; rebuilding it", self.file)
                return False
            index = load_index(header["backend"], self.dim, payload, header["params"])
            generation = header["generation"]
            if type(generation) is not int or index.ntotal != header["count"]:
                raise ValueError(f"the header says {header['count']!r} vectors at generation {generation!r}; "
                                 f"the index holds {index.ntotal}")
        except Exception as e:  # a cache file can be damaged or crafted in any way: the catalog rebuilds it
            log.warning("discarding the ANN index %s (%s: %s); rebuilding it from the catalog",
                        self.file, type(e).__name__, e)
            return False
        self._index, self.generation = index, generation
        return True

    def _fits(self, header: Mapping[str, Any]) -> bool:
        """Whether a saved file's header says it was made for these settings and this extractor."""
        return [header.get("settings"), header.get("dim"), header.get("manifest")] == \
            [self.settings(), self.dim, self.digest]

    def _keep_in_memory(self, error: OSError) -> None:
        if self._save_error is None:
            log.warning("could not save the ANN index to %s (%s); keeping it in memory", self.file, error)
        self._save_error = error


def save_atomic(path: Path, header: Mapping[str, Any], payload: bytes, like: Path | None = None) -> None:
    """Write a JSON header line (plus the payload's checksum) and the payload to a temp
    file beside `path`, fsync, then rename it over `path`.

    A reader opening `path` sees either the previous file or this one, never a mix, and
    a crash mid-write leaves the previous file in place (and a temp file that the next
    holder of the write lock removes). The file gets the permission bits of `like` (the
    catalog: who may read the truth may read its cache), not mkstemp's 0600. The caller
    holds the bundle's write lock.
    """
    header = {**header, CHECKSUM: hashlib.sha256(payload).hexdigest()}
    mode = stat.S_IMODE(like.stat().st_mode) if like is not None else None
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        _write_file(fd, [json.dumps(header).encode() + b"\n", payload], mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_file(fd: int, chunks: Iterable[bytes], mode: int | None) -> None:
    """Write `chunks` to `fd`, set its mode, fsync and close it."""
    with os.fdopen(fd, "wb") as f:
        if mode is not None:
            os.fchmod(f.fileno(), mode)
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def read_bundle_file(path: Path) -> tuple[dict[str, Any], bytes] | None:
    """What :func:`save_atomic` wrote, its checksum verified; None when there is no file.

    Raises:
        ValueError: the file is damaged (no header line, a header that is not a JSON
            object, a payload that does not match its checksum).
        OSError: the file exists but cannot be read.
    """
    try:
        with path.open("rb") as f:
            header = _read_header(f)
            payload = f.read()
    except FileNotFoundError:
        return None
    if header.get(CHECKSUM) != hashlib.sha256(payload).hexdigest():
        raise ValueError(f"the {CHECKSUM} checksum does not match the content")
    return header, payload


def read_bundle_header(path: Path) -> dict[str, Any] | None:
    """The header of what :func:`save_atomic` wrote, without reading the payload (so
    unchecked: it describes the file, it does not vouch for it); None when there is no file.

    Raises:
        ValueError: no header line, or a header that is not a JSON object.
        OSError: the file exists but cannot be read.
    """
    try:
        with path.open("rb") as f:
            return _read_header(f)
    except FileNotFoundError:
        return None


def _read_header(f: IO[bytes]) -> dict[str, Any]:
    line = f.readline(MAX_HEADER)
    if not line.endswith(b"\n"):
        raise ValueError("no header line")
    header = json.loads(line)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def remove_leftovers(folder: Path) -> None:
    """Remove the temp files of saves that never reached their rename (a killed or
    crashed writer's). Only a holder of the write lock may: no save can be under way."""
    for stale in folder.glob("*.*.tmp"):
        stale.unlink(missing_ok=True)
