"""A search structure kept as a cache of the catalog: loaded from its file, caught up with
what was committed since, rebuilt from the catalog when the file is missing or damaged.

The saved file records the catalog generation it reflects and what it was made for (the
settings, the extractor's digest). Catching up replays only what changed after that
generation (rows with a newer one, tombstones), so a reader process sees a writer's
committed work on its next search. A missing, foreign, damaged or crafted file is never an
error: it is discarded (with a warning when damaged) and rebuilt from what the catalog
stores, without reading any image. Only a holder of the write lock writes files; a reader
that cannot (the lock is taken, the disk is read-only or full) keeps what it rebuilt in
memory.

The ANN index (:mod:`.ann_cache`) and the local-feature index (:mod:`.local_cache`) are
two such caches: they differ in what they are built from, not in how they are kept.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from ..catalog import Catalog, Changes
from .files import read_bundle_file, save_atomic
from .lock import WriteLock

__all__ = ["CatalogCache", "CachedIndex"]

log = logging.getLogger(__name__)


class CachedIndex(Protocol):
    """What a cache needs of the structure it keeps."""

    @property
    def ntotal(self) -> int: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def needs_rebuild(self) -> bool: ...

    def to_bytes(self) -> bytes: ...


I = TypeVar("I", bound=CachedIndex)


class CatalogCache(ABC, Generic[I]):
    """Keeps one in-memory index in step with a catalog (see the module docstring).

    Subclasses say what the index is built from (:meth:`_build`), how a change is applied
    (:meth:`_add`), how a saved payload is read back (:meth:`_from_payload`), and what a
    saved file must have been made for (:meth:`_identity`).
    """

    what: ClassVar[str] = "index"  # for log messages: "ANN index", "local-feature index"

    def __init__(self, file: Path, catalog: Catalog, digest: str) -> None:
        self.file, self.catalog, self.digest = file, catalog, digest
        self._index: I | None = None
        self.generation = -1
        self.rebuilt_unsaved = False
        self._save_error: OSError | None = None  # why the last save failed: readers stop trying

    # ------------------------------------------------------------------ what subclasses say

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The settings the index is made under (recorded in the file)."""

    @abstractmethod
    def _build(self, settings: Mapping[str, Any]) -> tuple[I, int]:
        """A fresh index of everything the catalog stores, under `settings`, and the
        generation it reflects (read before the data: anything committed meanwhile is
        replayed again by the next :meth:`sync`, which is harmless: remove, then add)."""

    @abstractmethod
    def _add(self, index: I, changes: Changes) -> None:
        """Insert the changed rows that are ok (`changes.ids`; their old entries are gone)."""

    @abstractmethod
    def _from_payload(self, header: Mapping[str, Any], payload: bytes) -> I:
        """The index a saved payload holds; raises on anything damaged or crafted."""

    def _identity(self) -> dict[str, Any]:
        """Header fields a saved file must carry to be adopted: made for these settings
        and this extractor."""
        return {"settings": self.settings(), "manifest": self.digest}

    def _describe_index(self, index: I) -> dict[str, Any]:
        """Header fields that describe the saved index (besides its count and generation)."""
        return {}

    def _due(self, index: I) -> bool:
        """Whether compacting would pay off (tombstones, an overgrown buffer, stale training)."""
        return index.needs_rebuild()

    # ------------------------------------------------------------------ keeping it

    def sync(self) -> I:
        """The index, loaded or built if needed and caught up with the catalog."""
        if self._index is None and not self._load():
            self.rebuild()
        assert self._index is not None
        changes = self.catalog.changes_since(self.generation)
        if changes.generation < self.generation:  # the catalog was replaced by an older copy
            self.rebuild()
        elif changes.generation != self.generation:
            self._index.remove(np.concatenate([changes.removed, changes.ids]))
            if len(changes.ids):
                self._add(self._index, changes)
            self.generation = changes.generation
        assert self._index is not None
        return self._index

    def read(self, lock: WriteLock) -> I:
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

    def rebuild(self) -> None:
        """Replace the in-memory index by one built from the catalog."""
        self._index, self.generation = self._build(self.settings())
        self.rebuilt_unsaved = True

    def compact_if_due(self) -> bool:
        """Rebuild when the index asks (see :meth:`_due`)."""
        due = self._due(self.sync())
        if due:
            self.rebuild()
            self.sync()
        return due

    def save(self) -> None:
        """Write the index atomically; the caller holds the write lock. Raises OSError."""
        index = self.sync()
        self._write(index, self.generation, self.settings())
        self.rebuilt_unsaved, self._save_error = False, None

    def _write(self, index: I, generation: int, settings: Mapping[str, Any]) -> None:
        header = {**self._describe_index(index), **self._identity(), "settings": dict(settings),
                  "generation": generation, "count": index.ntotal}
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
                log.info("%s was made for other settings or another extractor; rebuilding it", self.file)
                return False
            index = self._from_payload(header, payload)
            generation = header["generation"]
            if type(generation) is not int or index.ntotal != header["count"]:
                raise ValueError(f"the header says {header['count']!r} entries at generation {generation!r}; "
                                 f"the index holds {index.ntotal}")
        except Exception as e:  # a cache file can be damaged or crafted in any way: the catalog rebuilds it
            log.warning("discarding the %s %s (%s: %s); rebuilding it from the catalog",
                        self.what, self.file, type(e).__name__, e)
            return False
        self._index, self.generation = index, generation
        return True

    def _fits(self, header: Mapping[str, Any]) -> bool:
        """Whether a saved file's header says it was made for what this cache keeps."""
        return all(header.get(key) == value for key, value in self._identity().items())

    def _keep_in_memory(self, error: OSError) -> None:
        if self._save_error is None:
            log.warning("could not save the %s to %s (%s); keeping it in memory", self.what, self.file, error)
        self._save_error = error
