"""Removals that stick: the paths a user took out of an index, as patterns that every
later indexing run leaves out.

A pattern is shell-style (``*``, ``?``, ``[...]``) on the absolute path, ``*`` crossing
folder boundaries, as in ``retrieve query --path``. The catalog stores them (it is the
truth: every process and every later run sees the same list); :func:`pattern_for` turns
what a user typed into one, and :class:`Exclusions` matches paths against them all at once.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable

from ..catalog import Catalog
from ..errors import RetrievalError
from ..filters import Filter

__all__ = ["Exclusions", "is_pattern", "pattern_for", "resolve"]


def is_pattern(text: str) -> bool:
    """Whether `text` names paths by pattern: it holds shell wildcards and is not the name
    of an existing file (``shots [1].jpg`` is a file when there is one)."""
    return glob.has_magic(text) and not os.path.lexists(text)


def pattern_for(item: str | os.PathLike[str]) -> str:
    """The exclusion pattern for a path, a folder or a pattern as typed.

    A relative path or pattern is anchored at the current folder, as a shell would; a
    pattern starting with ``*`` matches anywhere and stays as it is. A folder excludes
    everything below it. A plain path is escaped, so a ``[`` in a file name is a ``[``.
    """
    text = os.fspath(item)
    if is_pattern(text):
        return text if text.startswith("*") else os.path.abspath(text)
    path = os.path.abspath(text)
    return glob.escape(path.rstrip(os.sep)) + os.sep + "*" if os.path.isdir(path) else glob.escape(path)


class Exclusions:
    """A set of exclusion patterns, compiled once into one regular expression."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = sorted(set(patterns))
        self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns)) \
            if self.patterns else None

    def __bool__(self) -> bool:
        return self._regex is not None

    def excludes(self, path: str) -> bool:
        """Whether an absolute path matches one of the patterns."""
        return self._regex is not None and self._regex.match(path) is not None


def resolve(catalog: Catalog, items: Iterable[int | str | os.PathLike[str]],
            strict: bool = True) -> tuple[list[int], list[str]]:
    """What removing `items` for good means: (ids indexed now, patterns to record).

    An id must be in the catalog (its path becomes the pattern), and so must a file path
    when `strict`; a folder or a pattern may match nothing yet (it still keeps its paths
    out of later runs). Failed rows under a pattern are left for the next indexing run,
    which sweeps them.

    Raises:
        RetrievalError: an id, or with `strict` a file path, that is not in the catalog.
    """
    ids: list[int] = []
    patterns: list[str] = []
    for item in items:
        if isinstance(item, int):
            row = catalog.rows_by_id([item]).get(item)
            if row is None:
                raise RetrievalError(f"not in the index: {item} (nothing was removed)")
            ids.append(row.id)
            patterns.append(glob.escape(row.path))
            continue
        pattern = pattern_for(item)
        if is_pattern(os.fspath(item)) or os.path.isdir(item):
            ids.extend(int(i) for i in catalog.ids_matching(Filter(path_glob=pattern).conditions()))
        else:
            path = os.path.abspath(item)
            row = catalog.rows_by_path([path]).get(path)
            if row is None and strict:
                raise RetrievalError(f"not in the index: {os.fspath(item)} (nothing was removed)")
            ids.extend([row.id] if row is not None else [])
        patterns.append(pattern)
    return sorted(set(ids)), list(dict.fromkeys(patterns))
