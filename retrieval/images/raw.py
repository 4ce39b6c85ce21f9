"""Camera RAW files, read through the JPEG preview the camera embeds in them.

Every RAW format keeps, beside the sensor data, a full- or near-full-size JPEG rendered
by the camera (what its own screen shows). For retrieval that rendering is the right
input, and reading it costs a walk of the file's TIFF directories plus one JPEG decode:
no demosaicing library (rawpy/LibRaw, tens of MB, a native build per platform) and no
colour pipeline of our own, which would give a different picture from the camera's.

Most RAW formats are TIFF inside (DNG, CR2, NEF, ARW, PEF, SRW, ORF and RW2 with their
own magic numbers, ...): :func:`find_preview` walks IFD0, its chain and its SubIFDs, and
takes the largest baseline or progressive JPEG among the JPEG streams they point at
(lossless-JPEG sensor data is refused by its SOF marker). Fujifilm's RAF is not TIFF: its
header gives the preview's offset. A TIFF that is an ordinary picture (no sensor data,
no DNG or vendor mark) is not RAW and returns None: Pillow reads it as it is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import BadImageError

__all__ = ["RawPreview", "find_preview"]

_TIFF_MAGIC = {42: None, 0x4F52: "ORF", 0x5352: "ORF", 0x55: "RW2"}  # magic -> a RAW format (None: plain TIFF)
_RAF_MAGIC = b"FUJIFILMCCD-RAW "
_MAX_IFDS = 64  # a crafted chain of directories cannot loop or run long
_MAX_ENTRIES = 1024

# TIFF tags read here
_NEW_SUBFILE_TYPE, _MAKE, _ORIENTATION = 0x00FE, 0x010F, 0x0112
_COMPRESSION, _PHOTOMETRIC, _STRIP_OFFSETS, _STRIP_BYTES = 0x0103, 0x0106, 0x0111, 0x0117
_SUB_IFDS, _JPEG_OFFSET, _JPEG_LENGTH, _DNG_VERSION = 0x014A, 0x0201, 0x0202, 0xC612
_JPEG_COMPRESSIONS = (6, 7)  # old-style and new-style JPEG
_SENSOR_PHOTOMETRIC = (32803, 34892)  # colour filter array, linear raw
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
_INT_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I", 16: "Q"}
# Vendors whose RAW files share the ".tif"-like layout, by the Make tag's first word
_BY_MAKE = {"NIKON": "NEF", "SONY": "ARW", "PENTAX": "PEF", "RICOH": "PEF", "SAMSUNG": "SRW", "HASSELBLAD": "3FR",
            "LEAF": "MOS", "PHASE": "IIQ", "KODAK": "KDC", "MAMIYA": "MEF", "EPSON": "ERF", "CANON": "CR2"}
_SOF_DECODABLE = (0xC0, 0xC1, 0xC2)  # baseline, extended, progressive: what Pillow decodes


@dataclass(frozen=True)
class RawPreview:
    """The embedded JPEG of a RAW file, the orientation the file's IFD0 gives it (the
    preview's own EXIF usually has none), and the RAW format's name."""

    jpeg: bytes
    orientation: int
    format: str
    width: int
    height: int


def find_preview(data: bytes) -> RawPreview | None:
    """The largest decodable JPEG preview of a camera RAW file; None when `data` is not one.

    Raises:
        BadImageError: it is a RAW file, but holds no JPEG preview that can be decoded.
    """
    if data.startswith(_RAF_MAGIC):
        return _raf(data)
    header = _tiff_header(data)
    if header is None:
        return None
    endian, magic, first = header
    walk = _Walk(data, endian)
    walk.ifds(first, top=True)
    fmt = _TIFF_MAGIC[magic] or ("DNG" if walk.dng else "CR2" if data[8:10] == b"CR" else None)
    if fmt is None and not walk.sensor_data:
        return None  # an ordinary TIFF picture
    fmt = fmt or _BY_MAKE.get(walk.make.split(" ")[0].upper(), "RAW")
    best = max((c for c in (_jpeg_size(data, off, n) for off, n in walk.jpegs) if c), default=None,
               key=lambda c: c[1] * c[2])
    if best is None:
        raise BadImageError(f"{fmt} camera RAW file without a JPEG preview that can be decoded")
    (off, n), width, height = best
    return RawPreview(data[off:off + n], walk.orientation, fmt, width, height)


def _tiff_header(data: bytes) -> tuple[str, int, int] | None:
    """(struct byte order, magic number, offset of IFD0) of a TIFF-like file, else None."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return None
    endian = "<" if data[:2] == b"II" else ">"
    magic, first = struct.unpack_from(endian + "HI", data, 2)
    return (endian, magic, first) if magic in _TIFF_MAGIC else None


class _Walk:
    """What the image file directories of a TIFF-like file say about its pictures."""

    def __init__(self, data: bytes, endian: str) -> None:
        self.data, self.endian = data, endian
        self.jpegs: list[tuple[int, int]] = []  # (offset, length) of each JPEG stream pointed at
        self.dng = self.sensor_data = False
        self.make, self.orientation = "", 1
        self._seen: set[int] = set()

    def ifds(self, offset: int, top: bool = False) -> None:
        """Read the chain of directories starting at `offset`, and their SubIFDs."""
        while offset and offset not in self._seen and len(self._seen) < _MAX_IFDS:
            self._seen.add(offset)
            tags = self._entries(offset)
            if tags is None:
                return
            self._read(tags, top)
            top = False
            for sub in tags.get(_SUB_IFDS, ()):
                self.ifds(sub)
            count = self._u16(offset)
            offset = (self._u32(offset + 2 + 12 * count) or 0) if count is not None else 0

    def _read(self, tags: dict[int, tuple[int, ...] | bytes], top: bool) -> None:
        if top:
            self.dng = _DNG_VERSION in tags
            make = tags.get(_MAKE, b"")
            self.make = make.decode("latin-1").strip("\0 ") if isinstance(make, bytes) else ""
            orientation = _first(tags.get(_ORIENTATION), 1)
            self.orientation = orientation if orientation in range(1, 9) else 1
        if _first(tags.get(_PHOTOMETRIC), 0) in _SENSOR_PHOTOMETRIC:
            self.sensor_data = True
        start, length = _first(tags.get(_JPEG_OFFSET), 0), _first(tags.get(_JPEG_LENGTH), 0)
        if start and length:
            self.jpegs.append((start, length))
        strips, counts = tags.get(_STRIP_OFFSETS, ()), tags.get(_STRIP_BYTES, ())
        if _first(tags.get(_COMPRESSION), 1) in _JPEG_COMPRESSIONS and len(strips) == 1 and len(counts) == 1:
            self.jpegs.append((int(strips[0]), int(counts[0])))

    def _entries(self, offset: int) -> dict[int, tuple[int, ...] | bytes] | None:
        """The tags of the directory at `offset`: integers as tuples, text as bytes."""
        count = self._u16(offset)
        if count is None or count > _MAX_ENTRIES or offset + 2 + 12 * count > len(self.data):
            return None
        tags: dict[int, tuple[int, ...] | bytes] = {}
        for i in range(count):
            tag, kind, n = struct.unpack_from(self.endian + "HHI", self.data, offset + 2 + 12 * i)
            size = _TYPE_SIZES.get(kind, 0) * n
            at = offset + 10 + 12 * i if size <= 4 else self._u32(offset + 10 + 12 * i)
            if not size or at is None or at + size > len(self.data):
                continue
            if kind == 2:
                tags[tag] = self.data[at:at + size]
            elif kind in _INT_FORMATS:
                tags[tag] = struct.unpack_from(f"{self.endian}{n}{_INT_FORMATS[kind]}", self.data, at)
        return tags

    def _u16(self, at: int) -> int | None:
        return struct.unpack_from(self.endian + "H", self.data, at)[0] if 0 < at <= len(self.data) - 2 else None

    def _u32(self, at: int) -> int | None:
        return struct.unpack_from(self.endian + "I", self.data, at)[0] if 0 < at <= len(self.data) - 4 else None


def _first(values: tuple[int, ...] | bytes | None, default: int) -> int:
    return int(values[0]) if isinstance(values, tuple) and values else default


def _raf(data: bytes) -> RawPreview:
    """Fujifilm RAF: big-endian offset and length of the preview JPEG at bytes 84 and 88."""
    found = _jpeg_size(data, *struct.unpack_from(">II", data, 84)) if len(data) >= 92 else None
    if found is None:
        raise BadImageError("RAF camera RAW file without a JPEG preview that can be decoded")
    (off, n), width, height = found
    return RawPreview(data[off:off + n], 1, "RAF", width, height)  # the preview's own EXIF orients it


def _jpeg_size(data: bytes, offset: int, length: int) -> tuple[tuple[int, int], int, int] | None:
    """((offset, length), width, height) of a JPEG stream Pillow can decode, from its SOF
    marker; None when the span is out of the file, not a JPEG, or lossless (sensor data)."""
    end = offset + length
    if offset <= 0 or length < 4 or end > len(data) or data[offset:offset + 2] != b"\xff\xd8":
        return None
    at = offset + 2
    while at + 9 <= end and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _SOF_DECODABLE:
                return None
            height, width = struct.unpack_from(">HH", data, at + 5)
            return ((offset, length), width, height) if width and height else None
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return None
