"""Finishing a duplicate search: every copy but the kept one is moved to a folder or sent
to the trash, and taken out of the index.

Nothing here deletes a file outright: a move or the trash can be undone. Before a group
is touched its kept file must still be the one indexed (a copy is never set aside when
the file it duplicates has gone or changed), and each copy must be too (what changed since
indexing may no longer be a copy). One file failing is reported and the others go on.

A moved copy must not come back: its old path is gone, so the next indexing run would
simply drop it, but a destination folder inside an indexed root would be walked and its
files indexed again. Each destination path is therefore recorded as an exclusion (see
:mod:`.indexing.exclusions`): harmless outside the roots, what keeps them out inside.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .duplicates import Copy
from .errors import RetrievalError

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["SetAside", "set_aside"]

TrashFn = Callable[[str], None]


@dataclass(frozen=True)
class SetAside:
    """What happened to one copy that is not kept (in a dry run: what would happen)."""

    copy: Copy
    dest: str | None  # where a move takes it; None: to the trash, or not acted on
    error: str | None = None  # why it was left where it is
    done: bool = False  # moved or trashed (never in a dry run)


def set_aside(engine: Engine, groups: Sequence[tuple[Copy, Sequence[Copy]]], move_to: Path | None,
              apply: bool) -> list[SetAside]:
    """Move each group's other copies into `move_to`, or trash them when it is None;
    with `apply` False only check and plan. What was moved or trashed leaves the index.

    Raises:
        RetrievalError: `move_to` cannot be made a folder (before anything moves).
    """
    trash = _trasher() if move_to is None else None
    if move_to is not None and apply:
        try:
            move_to.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RetrievalError(f"cannot create {move_to}: {e.strerror or e}") from None
    taken: set[str] = set()  # destinations planned in this run (a dry run writes none)
    out: list[SetAside] = []
    try:
        for kept, others in groups:
            kept_error = _changed(kept)
            for copy in others:
                dest = _destination(move_to, copy.path, taken) if move_to is not None else None
                error = (f"kept file {kept.path} {kept_error}: nothing done to its copies" if kept_error
                         else _changed(copy) or _same_file(kept, copy))
                if error is None and apply:
                    error = _act(copy.path, dest, trash)
                out.append(SetAside(copy, dest, error, apply and error is None))
    finally:  # even when interrupted, what has moved leaves the index
        done = [s for s in out if s.done]
        if done:
            engine.remove([s.copy.id for s in done])
            engine.exclude([s.dest for s in done if s.dest is not None], strict=False)
    return out


def _changed(copy: Copy) -> str | None:
    """Why the file is no longer what was indexed, or None."""
    try:
        st = os.stat(copy.path)
    except OSError as e:
        return f"is gone ({e.strerror or e})"
    return None if (st.st_size, st.st_mtime_ns) == (copy.size, copy.mtime_ns) else \
        "changed since it was indexed (run retrieve index first)"


def _same_file(kept: Copy, copy: Copy) -> str | None:
    """A hard link, or a path through a linked folder, to the kept file: setting it aside
    frees nothing, and for a linked folder would move the kept file itself."""
    try:
        same = os.path.samefile(kept.path, copy.path)
    except OSError as e:  # gone in the meantime
        return e.strerror or str(e)
    return f"the same file as the kept {kept.path}" if same else None


def _destination(folder: Path, path: str, taken: set[str]) -> str:
    """A free name in `folder` for `path`: its own name, else ``name (2).ext`` and so on."""
    name = Path(path)
    candidate, n = str(folder.absolute() / name.name), 1
    while candidate in taken or os.path.lexists(candidate):
        n += 1
        candidate = str(folder.absolute() / f"{name.stem} ({n}){name.suffix}")
    taken.add(candidate)
    return candidate


def _act(path: str, dest: str | None, trash: TrashFn | None) -> str | None:
    """Move or trash one file; the reason it failed, or None."""
    try:
        if dest is not None:
            if os.path.lexists(dest):  # appeared since it was planned: never overwrite
                return f"{dest} exists"
            shutil.move(path, dest)
        elif trash is not None:
            trash(path)
    except OSError as e:
        return e.strerror or str(e)
    return None


def _trasher() -> TrashFn:
    """send2trash's function: the desktop's trash, from which the user can restore (imported
    on first use, as the CLI never loads what a command does not need)."""
    from send2trash import send2trash

    return send2trash
