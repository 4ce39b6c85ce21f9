"""Where exported graphs live, what names them, and how they are written.

A graph is cached under the user's cache folder, beside the other caches of this machine
(``$RETRIEVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/retrieve``, else ``~/.cache/retrieve``,
as torch keeps downloaded weights under ``$XDG_CACHE_HOME/torch``). Its file name is a
digest of everything that changes the graph: the manifest's identity (weights digest,
image size, pooling and its parameters, scales, dimension, normalisation constants), the
ONNX opset and this module's graph version. Changing any of them names another file, so
a stale graph is never picked up; it is simply not found and the new one is exported.

Each graph has a JSON sidecar holding the key material and the SHA-256 of the graph's
bytes: a truncated or damaged file fails that check and is exported again rather than
loaded. Both files are written atomically (temporary file, fsync, rename), so a crash or a
second process exporting the same graph never leaves a half-written file under the name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import ExportFailedError

__all__ = ["GRAPH_VERSION", "OPSET", "CachedGraph", "cache_root", "graph_key", "write_atomic"]

log = logging.getLogger(__name__)

OPSET = 18  # the first opset whose Resize can antialias (multi-scale shrinks the canvas with it)
GRAPH_VERSION = 1  # bump when the exported graph changes for the same manifest (e.g. a new input)


def cache_root() -> Path:
    """The folder of this user's retrieve caches (created on first write, not here)."""
    override = os.environ.get("RETRIEVE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "retrieve"


def graph_key(what: str, identity: Mapping[str, Any], opset: int = OPSET) -> str:
    """A file-name-safe digest of what decides a graph: its kind (`what`: "descriptor" or
    "denoiser"), the identity of its network, the opset and :data:`GRAPH_VERSION`."""
    material = json.dumps({"what": what, "identity": identity, "opset": opset, "version": GRAPH_VERSION},
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Run `write` on a temporary file beside `path`, flush it to disk, then rename it over
    `path`: readers see the old file or the whole new one, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CachedGraph:
    """One graph in the cache: ``<key>.onnx`` and its sidecar ``<key>.json``.

    Args:
        key: from :func:`graph_key`.
        info: what the sidecar records besides the checksum (the manifest, the opset):
            enough for another program to know which vectors the graph makes.
    """

    def __init__(self, key: str, info: Mapping[str, Any], root: Path | None = None) -> None:
        folder = (root or cache_root()) / "graphs"
        self.path = folder / f"{key}.onnx"
        self.sidecar = folder / f"{key}.json"
        self.info = dict(info)

    def valid(self) -> bool:
        """Whether the graph is there, whole: its sidecar names its exact bytes."""
        try:
            recorded = json.loads(self.sidecar.read_text())
            return self.path.is_file() and recorded.get("sha256") == _sha256(self.path)
        except (OSError, ValueError):
            return False

    def store(self, export: Callable[[Path], None]) -> Path:
        """Export with `export` (which writes an ONNX file at the path it is given) and
        record it; returns the graph's path.

        Raises:
            ExportFailedError: the export failed, or the cache folder cannot be written.
        """
        try:
            write_atomic(self.path, export)
            checksum = _sha256(self.path)
            write_atomic(self.sidecar, lambda p: p.write_text(json.dumps({**self.info, "sha256": checksum},
                                                                          indent=1, sort_keys=True)))
        except OSError as e:
            raise ExportFailedError(f"cannot write the graph cache {self.path.parent}: {e.strerror or e}; "
                                    "set RETRIEVE_CACHE_DIR to a writable folder") from None
        return self.path

    def ensure(self, export: Callable[[Path], None]) -> Path:
        """The graph's path, exported first when it is missing or damaged."""
        if self.valid():
            return self.path
        if self.path.exists() or self.sidecar.exists():
            log.warning("cached graph %s is damaged or incomplete: exporting it again", self.path)
        return self.store(export)

    def discard(self) -> None:
        """Forget the graph (it failed to load although its checksum held: a graph of an
        older exporter, say); the next :meth:`ensure` exports it again."""
        self.sidecar.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)
