"""Where indexes live: a per-user data folder, and names for the indexes in it.

An index found only relative to the current folder is lost as soon as the user runs a
query from somewhere else, so the default index, and any index given by a bare name, lives
in the user's data folder (platformdirs: ``~/.local/share/retrieve`` on Linux,
``~/Library/Application Support/retrieve`` on macOS, ``%LOCALAPPDATA%\\retrieve`` on
Windows; ``$RETRIEVE_HOME`` overrides it). Anything that looks like a path (a separator in
it, or ``.``/``~`` first) stays a path, taken as given: ``--index-dir ./work`` is a folder
here, ``--index-dir work`` the index named work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

from .errors import RetrievalError

__all__ = ["DEFAULT_INDEX", "data_home", "index_names", "index_path", "indexes_root"]

DEFAULT_INDEX = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def data_home() -> Path:
    """The folder that holds this user's indexes: ``$RETRIEVE_HOME``, else the platform's
    per-user data folder."""
    override = os.environ.get("RETRIEVE_HOME")
    return Path(override).expanduser() if override else platformdirs.user_data_path("retrieve", appauthor=False)


def indexes_root() -> Path:
    """The folder of the named indexes."""
    return data_home() / "indexes"


def index_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The absolute folder of an index given by name or by path.

    Raises:
        RetrievalError: a bare value that is not a usable name (``..``, control characters).
    """
    text = os.fspath(name_or_path)
    if not text:
        raise RetrievalError("an index needs a name or a folder path; got an empty one")
    if os.sep in text or (os.altsep and os.altsep in text) or text[0] in ".~":
        return Path(text).expanduser().absolute()
    if not _NAME.fullmatch(text):
        raise RetrievalError(f"{text!r} is not an index name (letters, digits, '_', '-', '.'; up to 100); "
                             "give a folder path with a / in it to use any folder")
    return indexes_root() / text


def index_names() -> list[str]:
    """The named indexes that exist, sorted (a folder with a catalog in it)."""
    from .opening import CATALOG_FILE

    root = indexes_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _NAME.fullmatch(p.name) and (p / CATALOG_FILE).is_file())
