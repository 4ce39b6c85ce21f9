"""The bundle's write lock: one writer process at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import IndexBusyError, RetrievalError
from .files import remove_leftovers

__all__ = ["WriteLock"]


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
