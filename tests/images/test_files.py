"""Only regular files are read, reads are bounded, and links stay inside the indexed folders.

Each case here hung or escaped before (issue 12): a FIFO named ``*.jpg`` blocked
``retrieve index`` for ever while it held the write lock, a link to /dev/zero was hashed
for ever, and a link to / indexed the whole machine. The timeouts turn a hang into a
failure (the signal interrupts a blocked open).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
from pathlib import Path

import pytest

from retrieval.errors import BadImageError
from retrieval.images.batches import DecodeDataset
from retrieval.images.files import MAX_FILE_BYTES, content_digest, discover, file_digest, read_file
from retrieval.images.preprocess import Preprocessor

from ..badimages import sample_photos, write_loop_tree

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                reason="FIFOs and /dev/zero are POSIX")

NOT_REGULAR = "not a regular file"
OUTSIDE = "outside the indexed folders"


def _photos(folder: Path, n: int, cls: str = "cup") -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for p in sample_photos(n, cls):
        shutil.copyfile(p, folder / p.name)
    return [str(folder / p.name) for p in sample_photos(n, cls)]


def _found(roots: list[Path], **kwargs: object) -> tuple[list[str], dict[str, str]]:
    """(paths discovered, {skipped path: reason}), at most 100 paths: a walk of the
    machine or a loop fails the test instead of running for ever."""
    skipped: dict[str, str] = {}
    found = itertools.islice(discover(roots, on_skip=skipped.__setitem__, **kwargs), 100)
    return [str(p) for p in found], skipped


# ---------------------------------------------------------------- special files


@pytest.mark.timeout(60, method="signal")
def test_a_fifo_named_like_an_image_is_recorded_failed_without_being_opened(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    good = _photos(root, 2)
    pipe = root / "pipe.jpg"
    os.mkfifo(pipe)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "socket.png"))
        engine = make_engine()
        report = engine.index([root])  # before: blocked in open() for ever, holding the write lock
    failed = dict(report.failed)
    assert set(failed) == {str(pipe), str(root / "socket.png")}
    assert all(NOT_REGULAR in why for why in failed.values())
    assert report.added == len(good) and len(engine) == len(good)
    for read in (read_file, file_digest):
        with pytest.raises(BadImageError, match=NOT_REGULAR):
            read(pipe)
    item = DecodeDataset([str(pipe)], Preprocessor(64))[0]
    assert item.pixels is None and NOT_REGULAR in (item.error or "")


@pytest.mark.timeout(60, method="signal")
def test_a_link_to_dev_zero_is_never_read(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    good = _photos(root, 1)
    zero = root / "zero.jpg"
    os.symlink("/dev/zero", zero)
    found, skipped = _found([root])
    assert found == good and list(skipped) == [str(zero)] and OUTSIDE in skipped[str(zero)]
    engine = make_engine()
    report = engine.index([root])  # before: hashed /dev/zero for ever
    assert (report.added, report.failed) == (1, [])
    assert str(zero) in _found([root], follow_links=True)[0]  # followed when asked, or named directly:
    report = engine.add([zero])  # refused from its stat
    assert NOT_REGULAR in dict(report.failed)[str(zero)]
    for read in (read_file, file_digest):
        with pytest.raises(BadImageError, match=NOT_REGULAR):
            read(zero)


def test_a_file_over_the_size_limit_is_refused_from_its_stat(make_engine, tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: takes no space
    report = make_engine().add([huge])  # before: hashed, then read whole into a worker
    assert "over the limit of 512 MB" in dict(report.failed)[str(huge)]
    photo = sample_photos(1)[0]
    size = photo.stat().st_size
    for read in (read_file, file_digest):
        with pytest.raises(BadImageError, match="over the limit"):
            read(photo, max_bytes=size - 1)
    assert read_file(photo, max_bytes=size).data == photo.read_bytes()  # the limit is inclusive


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_file_holding_more_than_its_stat_says_is_refused() -> None:
    """/proc files stat as 0 bytes and read as more: what a file growing under the reader looks like."""
    status = Path("/proc/self/status")
    with pytest.raises(BadImageError, match="changed while it was read"):
        read_file(status)
    with pytest.raises(BadImageError, match="grew past the size limit"):
        file_digest(status, max_bytes=16)


def test_the_stored_hash_is_the_hash_of_the_bytes_read() -> None:
    photo = sample_photos(1)[0]
    raw = read_file(photo)
    assert raw.digest == content_digest(photo.read_bytes()) == file_digest(photo)
    assert (raw.size, raw.mtime_ns) == (photo.stat().st_size, photo.stat().st_mtime_ns)


# ---------------------------------------------------------------- links


def test_links_leading_out_of_the_roots_are_skipped_with_a_reason(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    album = _photos(root / "album", 2)
    secret = _photos(outside, 1, "chair")
    os.symlink(outside, root / "to-outside")  # a folder link leading out
    os.symlink(secret[0], root / "secret.jpg")  # a file link leading out
    os.symlink("/", root / "machine")  # before: indexed the whole machine
    os.symlink(root / "album", root / "album-again")  # a folder link inside: the same folder, once
    os.symlink(album[0], root / "favourite.jpg")  # a file link inside: followed

    found, skipped = _found([root])
    assert found == [str(root / "favourite.jpg"), *album]
    assert sorted(skipped) == sorted(str(root / n) for n in ("machine", "secret.jpg", "to-outside"))
    assert all(OUTSIDE in why for why in skipped.values())
    found, skipped = _found([root, outside])  # with the outside folder a root too, only / stays out
    through = str(root / "to-outside" / Path(secret[0]).name)  # the outside folder, entered once, by the link
    assert found == [str(root / "favourite.jpg"), str(root / "secret.jpg"), *album, through]
    assert list(skipped) == [str(root / "machine")]


def test_follow_links_goes_outside_and_still_guards_loops(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    album = _photos(root / "album", 2)
    secret = _photos(outside, 1, "chair")
    os.symlink(outside, root / "to-outside")
    os.symlink(root, outside / "back")  # a loop through the outside folder
    found, skipped = _found([root], follow_links=True)
    assert found == [*album, str(root / "to-outside" / Path(secret[0]).name)] and skipped == {}
    found, skipped = _found([root])
    assert found == album and list(skipped) == [str(root / "to-outside")]


def test_indexing_keeps_to_the_folder_and_records_links_inside(make_engine, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    album = _photos(root / "album", 2)
    _photos(outside, 2, "chair")
    os.symlink(outside, root / "to-outside")
    os.symlink("/", root / "machine")
    os.symlink(album[0], root / "favourite.jpg")
    engine = make_engine()
    report = engine.index([root])
    assert report.failed == [] and (report.added, report.duplicates) == (3, 1)  # the inside link: a copy
    assert {r.path for r in engine.catalog.rows_under([str(tmp_path)]).values()} == {*album, str(root / "favourite.jpg")}


# ---------------------------------------------------------------- discovery of awkward trees


def test_discover_terminates_on_symlink_loops_and_yields_each_image_once(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    expected = write_loop_tree(root)
    found = [str(p) for p in itertools.islice(discover([root]), 1000)]  # bounded: a loop cannot hang
    assert sorted(found) == sorted(expected)
    # overlapping roots, and a root reached through the loop, add nothing
    found = [str(p) for p in itertools.islice(discover([root, root / "a", root / "a" / "up" / "b"]), 1000)]
    assert sorted(found) == sorted(expected)


def test_discover_skips_a_folder_named_like_an_image_but_enters_it(tmp_path: Path) -> None:
    album = tmp_path / "album.jpg"
    album.mkdir()
    shutil.copyfile(sample_photos(1)[0], album / "inside.jpg")
    assert [str(p) for p in discover([tmp_path])] == [str(album / "inside.jpg")]
