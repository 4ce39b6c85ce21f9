"""Every format a camera or phone writes decodes upright (issue 14, point 3): HEIC and AVIF
as their own libraries write them, camera RAW files through their embedded JPEG preview,
and the EXIF facts of each read from the same bytes."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.errors import BadImageError
from retrieval.images.decode import DecodedImage, load_image, load_image_or_jpeg
from retrieval.images.batches import DecodeDataset
from retrieval.images.exif import read_facts
from retrieval.images.files import FileBytes, content_digest
from retrieval.images.preprocess import Preprocessor
from retrieval.images.raw import find_preview

from ..badimages import sample_image
from .camerafiles import exif_block, jpeg_bytes, raw_file, save_as

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _halves() -> Image.Image:
    """40x30, left half red and right half blue: orientation 6 shows red on top."""
    image = Image.new("RGB", (40, 30), RED)
    image.paste(BLUE, (20, 0, 40, 30))
    return image


def _bytes(data: bytes) -> FileBytes:
    return FileBytes(data, len(data), 0, content_digest(data))


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_phone_formats_written_by_their_libraries_decode_upright(tmp_path: Path, fmt: str) -> None:
    path = save_as(_halves(), tmp_path / f"phone.{fmt.lower()}", fmt, exif_block(orientation=6))
    decoded = load_image(path)
    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == decoded.image.size == (30, 40)
    assert _close(decoded.image.getpixel((15, 3)), RED) and _close(decoded.image.getpixel((15, 36)), BLUE)


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_real_photo_as_heic_or_avif_looks_like_its_jpeg(tmp_path: Path, fmt: str) -> None:
    photo = sample_image("cup", "image_0001.jpg")
    decoded = load_image(save_as(photo, tmp_path / f"cup.{fmt.lower()}", fmt)).image
    assert decoded.size == photo.size
    diff = np.abs(np.asarray(decoded, np.int16) - np.asarray(photo, np.int16)).mean()
    assert diff < 6, diff  # lossy, but the same picture


def test_a_dng_decodes_as_its_preview_upright_not_as_its_thumbnail() -> None:
    """Pillow alone opens a DNG's IFD0: a green 16x12 thumbnail. The preview is larger, red,
    and the file's IFD0 says to turn it a quarter (orientation 6)."""
    data = raw_file(preview=jpeg_bytes((120, 80), RED), orientation=6)
    assert Image.open(io.BytesIO(data)).getpixel((1, 1)) == (0, 200, 0)  # what Pillow would have indexed
    decoded = load_image(_bytes(data))
    assert (decoded.format, decoded.width, decoded.height, decoded.image.size) == ("DNG", 80, 120, (80, 120))
    assert _close(decoded.image.getpixel((40, 60)), RED)


@pytest.mark.parametrize(("make", "magic", "as_strip", "fmt"), [
    ("NIKON CORPORATION", b"II*\x00", False, "NEF"),  # preview through JPEGInterchangeFormat in a SubIFD
    ("SONY", b"II*\x00", False, "ARW"),
    ("OLYMPUS", b"IIRO", True, "ORF"),  # a TIFF with a magic number of its own
    ("Panasonic", b"IIU\x00", True, "RW2"),
])
def test_vendor_raw_files_decode_through_their_preview(make: str, magic: bytes, as_strip: bool, fmt: str) -> None:
    data = raw_file(preview=jpeg_bytes((96, 64), BLUE), dng=False, make=make, magic=magic, preview_as_strip=as_strip)
    decoded = load_image(_bytes(data))
    assert (decoded.format, decoded.image.size) == (fmt, (96, 64))
    assert _close(decoded.image.getpixel((48, 32)), BLUE)


def test_a_raf_file_decodes_through_the_preview_its_header_points_at() -> None:
    """Fujifilm's RAF is no TIFF: its header gives the preview, whose EXIF is the photo's."""
    preview = jpeg_bytes((64, 48), RED, exif_block(make="FUJIFILM", model="X-T5").tobytes())
    header = b"FUJIFILMCCD-RAW 0201FF383501".ljust(84, b"\0") + struct.pack(">II", 100, len(preview))
    data = header.ljust(100, b"\0") + preview + b"\0" * 64
    decoded = load_image(_bytes(data))
    assert (decoded.format, decoded.image.size) == ("RAF", (64, 48))
    assert read_facts(data).camera_model == "X-T5"


def test_a_raw_file_goes_to_the_host_decoder_not_the_device_one() -> None:
    """Device decoders get plain JPEG files only: a RAW file keeps its own format name."""
    data = raw_file(preview=jpeg_bytes((64, 48), RED))
    got = load_image_or_jpeg(_bytes(data), draft_size=32)
    assert isinstance(got, DecodedImage) and got.format == "DNG"


def test_a_raw_file_without_a_decodable_preview_fails_with_its_reason() -> None:
    with pytest.raises(BadImageError, match="DNG camera RAW file without a JPEG preview"):
        load_image(_bytes(raw_file(preview=None)))


def test_an_ordinary_tiff_is_no_raw_file() -> None:
    buf = io.BytesIO()
    _halves().save(buf, "TIFF", exif=exif_block(make="Canon", model="CanoScan").tobytes())
    assert find_preview(buf.getvalue()) is None
    assert load_image(_bytes(buf.getvalue())).format == "TIFF"


@pytest.mark.parametrize("cut", [10, 40, 200, 700])
def test_a_truncated_raw_file_is_a_bad_image_never_a_crash(cut: int) -> None:
    data = raw_file(preview=jpeg_bytes((64, 48), RED))
    with pytest.raises(BadImageError):
        load_image(_bytes(data[:cut]))


def test_a_directory_chain_that_loops_ends() -> None:
    data = bytearray(raw_file(preview=jpeg_bytes((64, 48), RED)))
    first = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first)[0]
    struct.pack_into("<I", data, first + 2 + 12 * count, first)  # IFD0's "next IFD" is itself
    assert find_preview(bytes(data)) is not None


# ---------------------------------------------------------------- EXIF facts


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF", "AVIF", "PNG", "WEBP"])
def test_exif_facts_are_read_from_every_format(tmp_path: Path, fmt: str) -> None:
    exif = exif_block(taken="2023:07:14 18:30:05", make="FUJIFILM", model="X100V", lens="23mm F2",
                      gps=(-33.8568, 151.2153))
    facts = read_facts(save_as(_halves(), tmp_path / f"p.{fmt.lower()}", fmt, exif).read_bytes())
    assert (facts.taken_at, facts.camera_make, facts.camera_model, facts.lens) == \
        ("2023-07-14T18:30:05", "FUJIFILM", "X100V", "23mm F2")
    assert facts.gps_lat == pytest.approx(-33.8568, abs=1e-5) and facts.gps_lon == pytest.approx(151.2153, abs=1e-5)


def test_exif_facts_of_a_raw_file_come_from_its_ifd0() -> None:
    """A RAW file's EXIF is its TIFF container: make, model, date and orientation in IFD0."""
    data = raw_file(preview=jpeg_bytes((64, 48), RED), make="Canon", orientation=8,
                    exif=[(0x0110, 2, b"Canon EOS R5\0"), (0x0132, 2, b"2022:01:02 03:04:05\0")])
    facts = read_facts(data)
    assert (facts.camera_make, facts.camera_model, facts.taken_at, facts.orientation) == \
        ("Canon", "Canon EOS R5", "2022-01-02T03:04:05", 8)


@pytest.mark.parametrize(("taken", "gps"), [("0000:00:00 00:00:00", (91.0, 0.0)), ("    :  :     :  :  ", None),
                                            ("2023:02:30 10:00:00", None)])
def test_blank_or_impossible_exif_values_are_left_out(tmp_path: Path, taken: str, gps: tuple[float, float] | None
                                                      ) -> None:
    exif = exif_block(taken=taken, make="  ", gps=gps)
    facts = read_facts(save_as(_halves(), tmp_path / "p.jpg", "JPEG", exif).read_bytes())
    assert (facts.taken_at, facts.camera_make, facts.gps_lat) == (None, None, None)


def test_a_file_without_exif_or_not_an_image_has_no_facts(tmp_path: Path) -> None:
    assert read_facts(save_as(_halves(), tmp_path / "p.png", "PNG").read_bytes()).to_dict() == \
        dict.fromkeys(read_facts(b"").to_dict())
    assert read_facts(b"\xff\xd8\xff garbage").taken_at is None


def test_workers_read_the_facts_from_the_bytes_they_decode(tmp_path: Path) -> None:
    """The indexer's EXIF facts come from the loader worker, out of the same bytes as the
    pixels and the content hash (host and device decoding alike); only when asked."""
    jpeg = save_as(_halves(), tmp_path / "p.jpg", "JPEG", exif_block(make="Canon", taken="2020:01:01 00:00:00"))
    raw = tmp_path / "r.dng"
    raw.write_bytes(raw_file(preview=jpeg_bytes((64, 48), RED), make="Leica"))
    paths = [str(jpeg), str(raw)]
    for jpeg_on_device in (False, True):
        items = [DecodeDataset(paths, Preprocessor(32), jpeg_bytes=jpeg_on_device, exif=True)[i] for i in range(2)]
        assert [d.error for d in items] == [None, None]
        assert items[0].photo == read_facts(jpeg.read_bytes())
        assert (items[0].photo.camera_make, items[0].photo.taken_at) == ("Canon", "2020-01-01T00:00:00")  # type: ignore[union-attr]
        assert items[1].photo.camera_make == "Leica"  # type: ignore[union-attr]
    assert DecodeDataset(paths, Preprocessor(32))[0].photo is None
