"""What discovery hands to indexing in a real photo library (issue 14): every image format a
camera or phone writes, never hidden files or the thumbnail caches of NAS boxes, desktops and
archivers, and every other file reported by name as of an unknown type, never dropped silently."""

from __future__ import annotations

from pathlib import Path

from retrieval.images.files import UNKNOWN_TYPE, discover


def _touch(root: Path, *names: str) -> list[str]:
    paths = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        paths.append(str(path))
    return paths


def _walk(root: Path) -> tuple[list[str], dict[str, str]]:
    skipped: dict[str, str] = {}
    return [str(p) for p in discover([root], on_skip=skipped.__setitem__)], skipped


def test_every_camera_format_is_discovered(tmp_path: Path) -> None:
    names = ["a.HEIC", "b.heif", "c.avif", "d.DNG", "e.cr2", "f.nef", "g.arw", "h.orf", "i.rw2", "j.raf", "k.pef",
             "l.jfif", "m.jpg"]
    found, skipped = _walk(tmp_path)  # nothing yet
    assert found == [] and skipped == {}
    expected = _touch(tmp_path, *names)
    found, skipped = _walk(tmp_path)
    assert sorted(found) == sorted(expected) and skipped == {}


def test_hidden_entries_and_thumbnail_caches_are_left_out(tmp_path: Path) -> None:
    photos = _touch(tmp_path, "trip/a.jpg", "trip/sub/b.png")
    _touch(tmp_path, ".thumbnails/normal/a.png", "trip/@eaDir/a.jpg/SYNOPHOTO_THUMB_XL.jpg", "__MACOSX/trip/._a.jpg",
           "trip/._a.jpg", "trip/.AppleDouble/a.jpg", ".hidden.jpg", "trip/#recycle/old.jpg", "trip/Thumbs.db",
           "trip/.DS_Store", "@EADIR/x.jpg")
    found, skipped = _walk(tmp_path)
    assert sorted(found) == sorted(photos)
    assert skipped == {}, "left out as not the user's photos, not reported as unknown types"


def test_a_hidden_folder_named_as_a_root_is_indexed(tmp_path: Path) -> None:
    inside = _touch(tmp_path / ".private", "a.jpg")
    assert _walk(tmp_path / ".private")[0] == inside


def test_files_of_other_types_are_reported_by_name(tmp_path: Path) -> None:
    photos = _touch(tmp_path, "a.jpg")
    others = _touch(tmp_path, "clip.MOV", "notes.txt", "sub/sidecar.xmp", "README")
    found, skipped = _walk(tmp_path)
    assert found == photos
    assert skipped == dict.fromkeys(others, UNKNOWN_TYPE)
