"""Atomic, checksummed cache files: a JSON header line, then the payload.

A reader sees the previous file or the new one, never a mix; the checksum tells a damaged
or crafted file from an intact one, so a cache can be discarded and rebuilt instead of
trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["save_atomic", "read_bundle_file", "read_bundle_header", "remove_leftovers"]

CHECKSUM = "sha256"  # header key; SHA-256 runs at ~1.6 GB/s here (SHA-NI), BLAKE2b at ~0.8
MAX_HEADER = 1 << 20  # a first line longer than this is not a header


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
