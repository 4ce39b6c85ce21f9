"""Finding and reading image files: discovery walks folders and names the files with an
image suffix, reports every other file as of an unknown type (never a silent skip), and
leaves out hidden entries and the thumbnail caches that NAS boxes, desktops and archivers
scatter through photo folders; reading takes regular files only, within a size limit, and
hashes exactly the bytes it read (the content hash the catalog keys copies by).

Nothing here may hang or exhaust memory on hostile input: a FIFO, a device or a socket
named ``*.jpg`` is refused from its stat, before it is opened; a symbolic link leading
out of the indexed folders is not followed unless asked; every read is bounded.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadImageError

__all__ = ["IMAGE_SUFFIXES", "LEFT_OUT_NAMES", "MAX_FILE_BYTES", "RAW_SUFFIXES", "UNKNOWN_TYPE", "FileBytes",
           "content_digest", "discover", "file_digest", "is_image_path", "is_left_out", "open_regular", "os_reason",
           "read_file", "refusal"]

log = logging.getLogger(__name__)

# Camera RAW files: read through the JPEG preview the camera embeds (see :mod:`.raw`).
RAW_SUFFIXES = frozenset(
    {".dng", ".cr2", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".rwl", ".raw", ".raf", ".pef",
     ".srw", ".3fr", ".erf", ".kdc", ".mef", ".mos", ".iiq"}
)
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
     ".heic", ".heif", ".hif", ".avif"}  # HEIF through pillow-heif; AVIF is Pillow's own
) | RAW_SUFFIXES

# The reason :func:`discover` gives for a file whose suffix names no image type it reads.
UNKNOWN_TYPE = "unknown file type"
# Entries that mirror or shadow the photos beside them, not named like hidden ones: NAS
# thumbnail and recycle folders (Synology, QNAP), zip resource forks, Windows' caches.
# Hidden entries (.thumbnails, .AppleDouble, ._photo.jpg, .Trash) are left out as hidden.
LEFT_OUT_NAMES = frozenset(
    {"@eadir", "@recycle", "#recycle", "#snapshot", "__macosx", "$recycle.bin", "system volume information",
     "thumbs.db", "desktop.ini"}
)

# No image file we index is this large (a 100-Mpx PNG is a fraction of it), and reading
# one into a decode worker's memory must stay affordable with several workers.
MAX_FILE_BYTES = 512 * 2**20

# Open without blocking: if a regular file is swapped for a FIFO between the stat and the
# open, the open returns at once and the fstat that follows refuses it.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_OPEN_FLAGS = os.O_RDONLY | _NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
_CHUNK = 1 << 20

SkipHook = Callable[[str, str], None]
"""Called as on_skip(path, reason) for each entry discovery leaves out."""


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has one of the supported image suffixes."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _log_skip(path: str, reason: str) -> None:
    """The default `on_skip`: a warning for a link left out, a debug line for other types."""
    log.log(logging.DEBUG if reason == UNKNOWN_TYPE else logging.WARNING, "skipped %s: %s", path, reason)


def is_left_out(name: str) -> bool:
    """Whether discovery leaves out an entry of this name below a root: hidden entries
    (``.name``, which includes macOS's ``._photo.jpg`` resource forks) and
    :data:`LEFT_OUT_NAMES` (thumbnail folders and caches), in any case.

    A root itself is never left out: naming a hidden folder indexes it.
    """
    return name.startswith(".") or name.lower() in LEFT_OUT_NAMES


def discover(roots: Iterable[str | os.PathLike[str]], follow_links: bool = False,
             on_skip: SkipHook | None = None) -> Iterator[Path]:
    """Yield every image file below the roots, recursively, each once: a folder's files in
    name order, then its subfolders in name order.

    Every other regular-looking file is reported to `on_skip` with the reason
    :data:`UNKNOWN_TYPE`, so the caller can count and name what it did not read. Hidden
    entries and thumbnail folders (:func:`is_left_out`) are passed over silently: they
    are not the user's photos. A symbolic link (to a file or a folder) is followed when
    its target lies inside one of the roots, or anywhere with `follow_links`; otherwise
    it is left out and reported to `on_skip` (logged when None), so that a link to ``/``
    cannot index the machine. Each real folder is entered once, so a link back to a
    parent cannot loop. A root that is a file is yielded as it is. Files are named, not
    opened or stat'ed: special files are refused by whoever reads them (see :func:`refusal`).
    """
    skip = on_skip or _log_skip
    roots = [Path(os.path.abspath(r)) for r in roots]
    inside = [os.path.realpath(r).rstrip(os.sep) + os.sep for r in roots]
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        if root.is_file():
            yield root
            continue
        stack = [str(root)]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
                if (st.st_dev, st.st_ino) in seen_dirs:
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue  # vanished or unreadable folder: what it held is simply not found
            subfolders: list[str] = []
            for entry in entries:
                if is_left_out(entry.name):
                    continue
                if entry.is_symlink() and not follow_links:
                    target = os.path.realpath(entry.path)
                    if not (target + os.sep).startswith(tuple(inside)):
                        skip(entry.path, f"symbolic link to {target}, outside the indexed folders "
                                         "(following such links is off)")
                        continue
                if _is_dir(entry):
                    subfolders.append(entry.path)
                elif is_image_path(entry.name):
                    yield Path(entry.path)
                else:
                    skip(entry.path, UNKNOWN_TYPE)
            stack.extend(reversed(subfolders))


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """Whether an entry is a folder, through links; a broken or looping link is not one."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def refusal(st: os.stat_result, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Why a file with this stat is not read, or None: only regular files within the limit are.

    The one rule for the plan (before hashing) and the decode workers (before reading).
    """
    if stat.S_ISDIR(st.st_mode):
        return "is a directory"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, FIFO or socket)"
    if st.st_size > max_bytes:
        return f"file is {st.st_size / 2**20:,.0f} MB, over the limit of {max_bytes / 2**20:,.0f} MB"
    return None


def os_reason(e: OSError) -> str:
    """A one-line reason for an operating-system error on a file."""
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "file not found (broken link?)"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    return e.strerror or str(e) or type(e).__name__


@dataclass(frozen=True)
class FileBytes:
    """A file's whole content, read once, with the stat taken before reading and the
    content hash of exactly these bytes."""

    data: bytes
    size: int
    mtime_ns: int
    digest: str


def content_digest(data: bytes | bytearray | memoryview) -> str:
    """BLAKE2b-128 of bytes in memory: the same value :func:`file_digest` gives a file."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> FileBytes:
    """The content of a regular file of at most `max_bytes`, hashed.

    Raises:
        BadImageError: with the reason: not found, not a regular file, too large, or
            changed size while it was read (its bytes would not match its stat).
    """
    with open_regular(path, max_bytes) as (f, st):
        parts, left = [], st.st_size
        while left and (chunk := f.read(left)):
            parts.append(chunk)
            left -= len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if left or f.read(1):  # shorter or longer than its stat: another writer is at work
            raise BadImageError("file changed while it was read")
    return FileBytes(data, st.st_size, st.st_mtime_ns, content_digest(data))


def file_digest(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> str:
    """BLAKE2b-128 of a regular file's bytes, streamed: cheap enough to run on every new file.

    Raises:
        BadImageError: as :func:`read_file`; it reads at most `max_bytes` + 1 bytes.
    """
    h = hashlib.blake2b(digest_size=16)
    with open_regular(path, max_bytes) as (f, _):
        read = 0
        while chunk := f.read(_CHUNK):
            read += len(chunk)
            if read > max_bytes:
                raise BadImageError("file grew past the size limit while it was read")
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def open_regular(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES
                 ) -> Iterator[tuple[io.FileIO, os.stat_result]]:
    """An unbuffered reader of `path` and its fstat, if it is a regular file within the
    limit; any other file raises BadImageError, and a special one is never opened."""
    try:
        if (why := refusal(os.stat(path), max_bytes)) is not None:
            raise BadImageError(why)
        f = io.FileIO(os.open(path, _OPEN_FLAGS), "rb", closefd=True)
    except OSError as e:
        raise BadImageError(os_reason(e)) from None
    with f:
        st = os.fstat(f.fileno())
        if (why := refusal(st, max_bytes)) is not None:  # swapped for another file after the stat
            raise BadImageError(why)
        if _NONBLOCK:
            os.set_blocking(f.fileno(), True)  # a regular file: ordinary reads from here on
        try:
            yield f, st
        except OSError as e:
            raise BadImageError(os_reason(e)) from None
