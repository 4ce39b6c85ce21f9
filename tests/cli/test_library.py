"""Everyday use on a real photo library (issue 14, points 3, 4 and 5), the way a user meets
it: a phone folder of HEIC, AVIF, DNG and JPEG photos (written by their own libraries, EXIF
written with Pillow, the pictures real sample photos), with videos, notes and thumbnail
caches beside them, indexed, pruned, described and searched from the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from ..badimages import sample_image, sample_photos, write_corrupt
from ..images.camerafiles import exif_block, raw_file, save_as
from .conftest import invoke, one_error_line

RUN = ["-q", "--workers", "0", "--device", "cpu"]
PARIS, SYDNEY = (48.8584, 2.2945), (-33.8568, 151.2153)


def _photo(cls: str, i: int = 0) -> Image.Image:
    """The i-th bundled sample photo of a class, decoded."""
    return sample_image(cls, sample_photos(i + 1, cls)[i].name)


def _dng(path: Path, cls: str) -> Path:
    """A DNG from a Nikon whose preview is a real sample photo, taken at Christmas 2021."""
    preview = io.BytesIO()
    _photo(cls).save(preview, "JPEG", quality=90)
    path.write_bytes(raw_file(preview=preview.getvalue(), make="NIKON CORPORATION",
                              exif=[(0x0110, 2, b"NIKON Z 6\0"), (0x0132, 2, b"2021:12:25 09:00:00\0")]))
    return path


@pytest.fixture()
def phone(tmp_path: Path) -> Path:
    """phone/: 4 photos in 4 formats with EXIF, 2 files of other types, 2 thumbnail caches."""
    root = tmp_path / "phone"
    save_as(_photo("cup"), root / "IMG_0001.HEIC", "HEIF",
            exif_block(taken="2023:07:14 18:30:05", make="Apple", model="iPhone 14", gps=PARIS))
    save_as(_photo("chair"), root / "IMG_0002.avif", "AVIF",
            exif_block(taken="2024:06:01 10:00:00", make="FUJIFILM", model="X100V", lens="23mm F2", gps=SYDNEY))
    save_as(_photo("cup", 1), root / "cup.jpg", "JPEG",
            exif_block(taken="2024:06:30 23:00:00", make="Canon", model="Canon EOS R5"))
    _dng(root / "DSC_0003.DNG", "dolphin")
    (root / "clip.MOV").write_bytes(b"\0\0\0\x18ftypqt  ")
    (root / "notes.txt").write_text("shopping list")
    save_as(_photo("laptop"), root / ".thumbnails" / "normal" / "x.png", "PNG")
    save_as(_photo("laptop", 1), root / "@eaDir" / "cup.jpg" / "SYNOPHOTO_THUMB_XL.jpg", "JPEG")
    return root


def _index(root: Path, bundle: Path, *extra: str) -> dict:
    res = invoke("index", str(root), "-i", str(bundle), "--json", *RUN, *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _paths(bundle: Path, *filters: str) -> set[str]:
    """Names of the images a filtered query finds (the query is a file outside the index)."""
    query = str(sample_photos(3, "cup")[2])
    res = invoke("query", query, "-k", "20", "-i", str(bundle), "--json", "--device", "cpu", *filters)
    assert res.exit_code == 0, res.output
    return {Path(r["path"]).name for r in json.loads(res.stdout)["results"]}


def test_a_phone_folder_is_indexed_whole_and_its_other_files_named(phone: Path, tmp_path: Path) -> None:
    """Before: `added 0, ... failed 0: 0 images embedded`, exit 0."""
    bundle = tmp_path / "bundle"
    res = invoke("index", str(phone), "-i", str(bundle), *RUN)
    assert res.exit_code == 0, res.output
    assert "added 4," in res.stdout and "failed 0, unknown types 2 (.mov 1, .txt 1)" in res.stdout
    assert f"not read {phone / 'clip.MOV'}: unknown file type" in res.stderr
    assert f"not read {phone / 'notes.txt'}: unknown file type" in res.stderr
    assert "thumb" not in res.output.lower() and "eaDir" not in res.output

    formats = {}
    for name in ("IMG_0001.HEIC", "IMG_0002.avif", "cup.jpg", "DSC_0003.DNG"):
        shown = invoke("meta", str(phone / name), "-i", str(bundle), "--json")
        assert shown.exit_code == 0, shown.output
        formats[name] = json.loads(shown.stdout)
    assert {n: f["format"] for n, f in formats.items()} == \
        {"IMG_0001.HEIC": "HEIF", "IMG_0002.avif": "AVIF", "cup.jpg": "JPEG", "DSC_0003.DNG": "DNG"}
    heic, avif, dng = formats["IMG_0001.HEIC"], formats["IMG_0002.avif"], formats["DSC_0003.DNG"]
    assert (heic["taken_at"], heic["camera_make"], heic["camera_model"]) == ("2023-07-14T18:30:05", "Apple", "iPhone 14")
    assert (heic["gps_lat"], heic["gps_lon"]) == pytest.approx(PARIS, abs=1e-5)
    assert (avif["lens"], avif["width"], avif["height"]) == ("23mm F2", *_photo("chair").size)
    assert (dng["camera_model"], dng["taken_at"]) == ("NIKON Z 6", "2021-12-25T09:00:00")

    again = _index(phone, bundle)
    assert (again["added"], again["unchanged"], again["unknown_types"]) == (0, 4, 2)
    assert sorted(again["unknown_files"]) == [str(phone / "clip.MOV"), str(phone / "notes.txt")]


@pytest.mark.parametrize("case", ["no images", "only bad images", "typo"])
def test_a_first_run_that_indexes_nothing_fails_and_leaves_no_index(tmp_path: Path, case: str) -> None:
    """Before: exit 0 and an empty bundle; a typo'd folder left a catalog.sqlite."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "clip.mov").write_bytes(b"not a photo")
    if case == "only bad images":
        write_corrupt(folder / "broken.jpg")
    bundle = tmp_path / "bundle"
    res = invoke("index", str(folder if case != "typo" else tmp_path / "vidoes"), "-i", str(bundle), *RUN)
    assert res.exit_code == 2, res.output
    last = res.stderr.strip().splitlines()[-1]
    if case == "typo":
        assert last == f"error: folder not found: {tmp_path / 'vidoes'}"
    else:
        failed = int(case == "only bad images")
        assert last == (f"error: no image indexed from {folder} ({failed} failed, 1 of unknown types: .mov 1); "
                        f"no index was created at {bundle}")
    assert not bundle.exists()


def test_an_existing_index_survives_a_run_that_finds_nothing(phone: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _index(phone, bundle)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _index(empty, bundle)["added"] == 0
    assert json.loads(invoke("info", "-i", str(bundle), "--json").stdout)["count"] == 4


def test_removals_stick_and_exclusions_can_be_undone(phone: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _index(phone, bundle)

    def count() -> int:
        return json.loads(invoke("info", "-i", str(bundle), "--json").stdout)["count"]

    # an unknown id is an error, as for `tag`, and nothing is removed then (before: `removed 0`, exit 0)
    assert one_error_line(invoke("remove", "9999", "-i", str(bundle))) == "error: not in the index: 9999 (nothing was removed)"
    assert "not in the index: 9999" in one_error_line(invoke("remove", "1", "9999", "-i", str(bundle)))
    assert "not in the index" in one_error_line(invoke("remove", str(phone / "notes.txt"), "-i", str(bundle)))
    assert count() == 4

    res = invoke("remove", str(phone / "IMG_*"), "-i", str(bundle), "--json")  # a pattern, as a shell leaves it
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"removed": 2, "excluded": [str(phone / "IMG_*")], "restored": []}
    report = _index(phone, bundle)
    assert (report["added"], report["excluded"], count()) == (0, 2, 2)

    report = _index(phone, bundle, "--exclude", "*.DNG")  # removes the DNG now, and leaves it out later
    assert (report["removed"], report["excluded"], count()) == (1, 3, 1)
    listed = invoke("remove", "--list", "-i", str(bundle))
    assert listed.stdout.splitlines() == sorted(["*.DNG", str(phone / "IMG_*")])

    assert "is not excluded" in one_error_line(invoke("remove", "--undo", "*.jpg", "-i", str(bundle)))
    res = invoke("remove", "--undo", "*.DNG", "--undo", str(phone / "IMG_*"), "-i", str(bundle), "--json")
    assert res.exit_code == 0 and sorted(json.loads(res.stdout)["restored"]) == sorted(["*.DNG", str(phone / "IMG_*")])
    report = _index(phone, bundle)
    assert (report["added"], report["excluded"], count()) == (3, 0, 4)

    res = invoke("remove", str(phone), "-i", str(bundle), "--json")  # a folder: everything below it
    assert json.loads(res.stdout)["removed"] == 4 and json.loads(res.stdout)["excluded"] == [f"{phone}/*"]


def test_exif_filters_find_photos_by_date_camera_and_place(phone: Path, tmp_path: Path) -> None:
    """Before: `--since` was the file's mtime and no filter knew when or where a photo was taken."""
    bundle = tmp_path / "bundle"
    _index(phone, bundle)
    assert _paths(bundle, "--taken-since", "2024-01-01") == {"IMG_0002.avif", "cup.jpg"}
    assert _paths(bundle, "--taken-until", "2024-06-30") == {"IMG_0001.HEIC", "IMG_0002.avif", "cup.jpg",
                                                             "DSC_0003.DNG"}  # a bare date includes its day
    assert _paths(bundle, "--taken-until", "2024-06-30T12:00") == {"IMG_0001.HEIC", "IMG_0002.avif", "DSC_0003.DNG"}
    assert _paths(bundle, "--camera", "x100") == {"IMG_0002.avif"}
    assert _paths(bundle, "--camera", "nikon z") == {"DSC_0003.DNG"}
    res = invoke("query", str(sample_photos(3, "cup")[2]), "-i", str(bundle), "--json", "--camera", "x100")
    (hit,) = json.loads(res.stdout)["results"]  # and each result says what its EXIF says
    assert {k: hit["photo"][k] for k in ("taken_at", "camera_make", "camera_model", "lens")} == \
        {"taken_at": "2024-06-01T10:00:00", "camera_make": "FUJIFILM", "camera_model": "X100V", "lens": "23mm F2"}
    assert hit["photo"]["gps_lat"] < 0 < hit["photo"]["gps_lon"]  # Sydney
    assert _paths(bundle, "--near", "48.86,2.30,5") == {"IMG_0001.HEIC"}  # the photo is 0.44 km from that point
    assert _paths(bundle, "--near", "48.86,2.30,0.45") == {"IMG_0001.HEIC"}
    assert _paths(bundle, "--near", "48.86,2.30,0.4") == set()
    assert _paths(bundle, "--near", "-33.87,151.21,2") == {"IMG_0002.avif"}
    for bad in ("48.8,2.3", "91,0,5", "48.8,2.3,-1"):
        res = invoke("query", str(phone / "cup.jpg"), "-i", str(bundle), "--near", bad)
        assert "LAT,LON,KM" in one_error_line(res) or "latitude" in one_error_line(res)


def test_meta_sets_metadata_one_image_or_many_from_csv(phone: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    _index(phone, bundle)
    res = invoke("meta", str(phone / "cup.jpg"), "--set", "sku=A-1", "--set", "price=9.5", "-i", str(bundle), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metadata"] == {"sku": "A-1", "price": 9.5}

    csv_file = tmp_path / "stock.csv"
    csv_file.write_text(f"path,sku,in_stock,price\n{phone / 'cup.jpg'},A-1b,true,\n"
                        f"{phone / 'IMG_0002.avif'},C-7,false,120\n")
    res = invoke("meta", "--from-csv", str(csv_file), "-i", str(bundle), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == {"updated": 2}
    cup = json.loads(invoke("meta", str(phone / "cup.jpg"), "-i", str(bundle), "--json").stdout)["metadata"]
    assert cup == {"sku": "A-1b", "price": 9.5, "in_stock": True}  # an empty cell keeps the stored value
    assert _paths(bundle, "--where", "in_stock=true") == {"cup.jpg"}
    assert _paths(bundle, "--where", "price=120") == {"IMG_0002.avif"}
    res = invoke("meta", str(phone / "cup.jpg"), "--unset", "price", "-i", str(bundle), "--json")
    assert json.loads(res.stdout)["metadata"] == {"sku": "A-1b", "in_stock": True}

    csv_file.write_text(f"path,sku\n{phone / 'cup.jpg'},Z-9\n{phone / 'notes.txt'},Z-10\n")
    line = one_error_line(invoke("meta", "--from-csv", str(csv_file), "-i", str(bundle)))
    assert line == f"error: {csv_file} line 3: not in the index: {phone / 'notes.txt'}"
    cup = json.loads(invoke("meta", str(phone / "cup.jpg"), "-i", str(bundle), "--json").stdout)["metadata"]
    assert cup["sku"] == "A-1b", "a bad row writes nothing"

    csv_file.write_text("name,sku\ncup.jpg,Z-9\n")
    assert "needs an id or a path column" in one_error_line(invoke("meta", "--from-csv", str(csv_file), "-i", str(bundle)))
    assert "not in the index: 9999" in one_error_line(invoke("meta", "9999", "-i", str(bundle)))
