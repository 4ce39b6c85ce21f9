"""What cameras and phones write, for the tests: HEIC and AVIF written by pillow-heif and
Pillow themselves, EXIF written with Pillow, and camera-RAW-like files.

RAW files are laid out as the DNG specification and the vendors' TIFF-based formats lay them out: IFD0 with a small uncompressed RGB thumbnail (and the
orientation), SubIFDs holding a baseline JPEG preview and the sensor's colour-filter-array
data. The sensor data is real CFA layout (an RGGB mosaic of 16-bit samples, uncompressed,
as DNG allows), so a RAW decoder could demosaic it; the preview is a real JPEG written by
Pillow. The thumbnail, the preview and the mosaic have different colours, so a test can
tell which one was decoded.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

# TIFF field types
_SHORT, _LONG, _ASCII, _BYTE = 3, 4, 2, 1
_SIZES = {_SHORT: 2, _LONG: 4, _ASCII: 1, _BYTE: 1}
_FORMATS = {_SHORT: "H", _LONG: "I", _BYTE: "B"}

Entry = tuple[int, int, Sequence[int] | bytes]  # (tag, type, values)


def exif_block(*, taken: str | None = None, make: str | None = None, model: str | None = None,
               lens: str | None = None, gps: tuple[float, float] | None = None, orientation: int | None = None
               ) -> Image.Exif:
    """EXIF as a camera writes it: IFD0 (make, model, orientation), the Exif IFD (date
    taken as ``YYYY:MM:DD HH:MM:SS``, lens) and the GPS IFD (degrees, minutes, seconds)."""
    exif = Image.Exif()
    for tag, value in ((0x010F, make), (0x0110, model), (0x0112, orientation)):
        if value is not None:
            exif[tag] = value
    sub = exif.get_ifd(0x8769)
    if taken is not None:
        sub[0x9003] = taken
    if lens is not None:
        sub[0xA434] = lens
    if gps is not None:
        info = exif.get_ifd(0x8825)
        for ref_tag, tag, value, refs in ((1, 2, gps[0], "NS"), (3, 4, gps[1], "EW")):
            degrees, rest = divmod(abs(value) * 3600, 3600)
            minutes, seconds = divmod(rest, 60)
            info[ref_tag] = refs[value < 0]
            info[tag] = (Fraction(int(degrees)), Fraction(int(minutes)), Fraction(seconds).limit_denominator(10_000))
    return exif


def save_as(image: Image.Image, path: Path, fmt: str, exif: Image.Exif | None = None) -> Path:
    """`image` written by the format's own library (Pillow, or pillow-heif for HEIF)."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, quality=90, **({"exif": exif.tobytes()} if exif is not None else {}))
    return path


def jpeg_bytes(size: tuple[int, int], colour: tuple[int, int, int], exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def raw_file(*, preview: bytes | None, dng: bool = True, make: str = "Canon", orientation: int = 1,
             sensor: tuple[int, int] = (64, 48), preview_as_strip: bool = True, magic: bytes = b"II*\x00",
             exif: Sequence[Entry] = ()) -> bytes:
    """A little-endian TIFF-like RAW file: IFD0 (a 16x12 green thumbnail, Make, orientation,
    DNGVersion when `dng`, `exif` entries) -> SubIFDs [preview JPEG (a strip with
    compression 7 as DNG stores it, or JPEGInterchangeFormat as NEF/ARW do), CFA sensor data].
    """
    thumb = np.zeros((12, 16, 3), np.uint8)
    thumb[..., 1] = 200
    w, h = sensor
    mosaic = np.full((h, w), 1000, "<u2")
    mosaic[0::2, 0::2] = 60000  # red sites bright: a demosaiced image would be reddish
    subs: list[list[Entry]] = []
    blobs: dict[str, bytes] = {"thumb": thumb.tobytes(), "cfa": mosaic.tobytes()}
    if preview is not None:
        blobs["preview"] = preview
        pw, ph = Image.open(io.BytesIO(preview)).size
        where: list[Entry] = ([(0x0111, _LONG, [0]), (0x0117, _LONG, [len(preview)])] if preview_as_strip
                              else [(0x0201, _LONG, [0]), (0x0202, _LONG, [len(preview)])])
        subs.append([(0x00FE, _LONG, [1]), (0x0100, _LONG, [pw]), (0x0101, _LONG, [ph]),
                     (0x0103, _SHORT, [7 if preview_as_strip else 6]), (0x0106, _SHORT, [6]), *where])
    subs.append([(0x00FE, _LONG, [0]), (0x0100, _LONG, [w]), (0x0101, _LONG, [h]), (0x0102, _SHORT, [16]),
                 (0x0103, _SHORT, [1]), (0x0106, _SHORT, [32803]), (0x0111, _LONG, [0]), (0x0115, _SHORT, [1]),
                 (0x0117, _LONG, [len(blobs["cfa"])]), (0x828D, _SHORT, [2, 2]), (0x828E, _BYTE, [0, 1, 1, 2])])
    ifd0: list[Entry] = [(0x00FE, _LONG, [1]), (0x0100, _LONG, [16]), (0x0101, _LONG, [12]),
                         (0x0102, _SHORT, [8, 8, 8]), (0x0103, _SHORT, [1]), (0x0106, _SHORT, [2]),
                         (0x010F, _ASCII, make.encode() + b"\0"), (0x0111, _LONG, [0]),
                         (0x0112, _SHORT, [orientation]), (0x0115, _SHORT, [3]), (0x0117, _LONG, [len(blobs["thumb"])]),
                         (0x014A, _LONG, [0] * len(subs)), *exif]
    if dng:
        ifd0.append((0xC612, _BYTE, [1, 4, 0, 0]))
    return _layout(magic, ifd0, subs, blobs)


def _layout(magic: bytes, ifd0: list[Entry], subs: list[list[Entry]], blobs: dict[str, bytes]) -> bytes:
    """Place the directories, then the blobs, and patch the offsets that point at them."""
    ifds = [sorted(ifd0), *(sorted(s) for s in subs)]
    sizes = [2 + 12 * len(d) + 4 + sum(_extra(e) for e in d) for d in ifds]
    starts = [8 + sum(sizes[:i]) for i in range(len(ifds))]
    blob_at, at = {}, 8 + sum(sizes)
    for name, blob in blobs.items():
        blob_at[name] = at
        at += len(blob)
    sub_offsets = starts[1:]

    def patched(i: int, tag: int, values: Sequence[int] | bytes) -> Sequence[int] | bytes:
        if i == 0 and tag == 0x0111:
            return [blob_at["thumb"]]
        if i == 0 and tag == 0x014A:
            return sub_offsets
        if i >= 1 and tag in (0x0111, 0x0201):  # the preview is the first SubIFD, when there is one
            return [blob_at["preview" if "preview" in blobs and i == 1 else "cfa"]]
        return values

    out = bytearray(magic + struct.pack("<I", starts[0]))
    for i, (d, start) in enumerate(zip(ifds, starts)):
        extra_at = start + 2 + 12 * len(d) + 4
        head, tail = bytearray(struct.pack("<H", len(d))), bytearray()
        for tag, kind, values in d:
            values = patched(i, tag, values)
            packed = bytes(values) if kind == _ASCII else struct.pack(f"<{len(values)}{_FORMATS[kind]}", *values)
            head += struct.pack("<HHI", tag, kind, len(values))
            if len(packed) <= 4:
                head += packed.ljust(4, b"\0")
            else:
                head += struct.pack("<I", extra_at + len(tail))
                tail += packed
        out += head + struct.pack("<I", 0) + tail
    for blob in blobs.values():
        out += blob
    return bytes(out)


def _extra(entry: Entry) -> int:
    """Bytes an entry's values take outside its 12-byte slot."""
    tag, kind, values = entry
    n = len(values) * _SIZES[kind]
    return n if n > 4 else 0
