"""Bad files while indexing: corrupt, truncated, zero-byte, non-image, unsupported and
decompression-bomb files; CMYK, 16-bit, palette, alpha and EXIF-rotated images; paths
with spaces, non-ASCII and non-UTF-8 bytes; unreadable files; broken links and symlink
loops. Indexing records each failure with its reason, goes on, and loses nothing
indexed before.

All files are generated (see tests/badimages.py); only a handful of sample photos are
embedded, with the session's shared model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import retrieval.images.batches
import retrieval.indexing.plan
from retrieval import Engine, RetrievalError
from retrieval.errors import BadImageError
from retrieval.images.files import os_reason

from .. import badimages as bi


def _copy_undecodable(bad_dir: Path, dest: Path) -> dict[str, str]:
    """Copy every undecodable kind into `dest`; returns {path: expected reason substring}."""
    dest.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, _, reason in bi.UNDECODABLE.values():
        shutil.copyfile(bad_dir / name, dest / name)
        expected[str(dest / name)] = reason
    return expected


def _failed(report) -> dict[str, str]:
    paths = [p for p, _ in report.failed]
    assert len(paths) == len(set(paths)), f"a file was reported failed twice: {paths}"
    return dict(report.failed)


def _ok_paths(engine: Engine, root: Path) -> set[str]:
    return {p for p, r in engine.catalog.rows_under([str(root)]).items() if r.status == "ok"}


@pytest.fixture()
def mixed_dir(tmp_path: Path, bad_dir: Path) -> tuple[Path, set[str], dict[str, str]]:
    """Good photos, awkward-but-valid images and every bad kind in one tree.

    Returns (root, paths that must be indexed, {path that must fail: reason substring}).
    """
    root = tmp_path / "mixed"
    root.mkdir()
    good: set[str] = set()
    for p in bi.sample_photos(4):
        shutil.copyfile(p, root / p.name)
        good.add(str(root / p.name))
    for name, writer in bi.AWKWARD.values():
        good.add(str(writer(root / name)))
    inner = bi.sample_photos(2, "chair")
    (root / "sub").mkdir()
    shutil.copyfile(inner[0], root / "sub" / "inner.jpg")
    os.symlink("..", root / "sub" / "up")  # a loop back to the root
    (root / "album.jpg").mkdir()  # a folder named like an image
    shutil.copyfile(inner[1], root / "album.jpg" / "inside.jpg")
    good |= {str(root / "sub" / "inner.jpg"), str(root / "album.jpg" / "inside.jpg")}

    bad = _copy_undecodable(bad_dir, root)
    shutil.copyfile(root / "empty.jpg", root / "empty-twin.png")  # same (empty) content twice
    shutil.copyfile(root / "corrupt.jpg", root / "corrupt-twin.jpg")
    os.symlink("no-such-file.jpg", root / "broken-link.jpg")
    os.symlink("self-loop.jpg", root / "self-loop.jpg")
    bad |= {str(root / "empty-twin.png"): "not a recognised image format",
            str(root / "corrupt-twin.jpg"): "not a recognised image format",
            str(root / "broken-link.jpg"): "not found",
            str(root / "self-loop.jpg"): "symbolic link"}
    (root / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")  # not an image
    (root / "readme.txt").write_text("not an image either")  # suffix: discovery skips both
    return root, good, bad


def test_index_records_each_bad_file_with_its_reason_and_indexes_the_rest(make_engine, mixed_dir) -> None:
    root, good, bad = mixed_dir
    engine = make_engine(batch_size=4)  # batches mix good and bad files
    report = engine.index([root])

    failed = _failed(report)
    assert set(failed) == set(bad), "failed files differ from the bad ones"
    for path, reason in failed.items():
        assert bad[path] in reason.lower(), (path, reason)
        assert reason and "\n" not in reason
    assert (report.added, report.embedded) == (len(good), len(good))
    assert len(engine) == len(good)
    assert _ok_paths(engine, root) == good  # nothing through the loop, nothing skipped

    info = engine.info()
    assert info["count"] == len(good) and info["failed_count"] == len(bad)
    assert {f["path"]: f["error"] for f in info["failed"]} == failed
    assert report.to_dict()["failed"] == len(bad)

    exif6 = engine.catalog.rows_by_path([str(root / "exif6.jpg")])[str(root / "exif6.jpg")]
    assert (exif6.width, exif6.height) == (40, 60)  # recorded as seen upright

    hits = engine.search(root / bi.sample_photos(1)[0].name, k=len(good))
    assert {h.path for h in hits} <= good and len(hits) == len(good) - 1  # the query itself is left out

    again = engine.index([root])  # a rerun neither duplicates failures nor loses images
    assert (again.added, again.updated, again.embedded, again.removed) == (0, 0, 0, 0)
    assert len(engine) == len(good) and engine.info()["failed_count"] == len(bad)


def test_bad_files_added_later_lose_nothing_indexed_before(make_engine, tmp_path: Path, bad_dir: Path) -> None:
    root = tmp_path / "photos"
    bi.copy_photos(root, 5)
    engine = make_engine("bundle")
    assert engine.index([root]).added == 5
    query = root / bi.sample_photos(1)[0].name
    before = [(h.id, h.path, round(h.score, 5)) for h in engine.search(query, k=4)]
    ids_before = {p: r.id for p, r in engine.catalog.rows_under([str(root)]).items()}

    bad = _copy_undecodable(bad_dir, root / "new")
    os.symlink("gone.jpg", root / "new" / "broken.jpg")
    bad[str(root / "new" / "broken.jpg")] = "not found"
    report = engine.index([root])

    assert set(_failed(report)) == set(bad)
    assert (report.unchanged, report.added, report.removed, report.embedded) == (5, 0, 0, 0)
    assert len(engine) == 5
    assert [(h.id, h.path, round(h.score, 5)) for h in engine.search(query, k=4)] == before
    ok_ids = {p: r.id for p, r in engine.catalog.rows_under([str(root)]).items() if r.status == "ok"}
    assert ok_ids == ids_before

    engine.close()  # and it is all on disk
    reopened = make_engine("bundle")
    assert len(reopened) == 5 and reopened.info()["failed_count"] == len(bad)
    assert [(h.id, h.path, round(h.score, 5)) for h in reopened.search(query, k=4)] == before


def test_file_that_turns_corrupt_is_recorded_failed_and_recovers_when_fixed(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    bi.copy_photos(root, 3)
    engine = make_engine()
    engine.index([root])
    victim = root / bi.sample_photos(3)[1].name
    victim_id = engine.catalog.rows_by_path([str(victim)])[str(victim)].id
    good_bytes = victim.read_bytes()

    bi.write_corrupt(victim, size=len(good_bytes) + 1)
    report = engine.index([root])
    assert list(_failed(report)) == [str(victim)] and report.unchanged == 2
    assert len(engine) == 2
    hits = engine.search(root / bi.sample_photos(1)[0].name, k=5)
    assert len(hits) == 1 and victim_id not in {h.id for h in hits}  # its stale vector is gone

    victim.write_bytes(good_bytes)
    os.utime(victim, ns=(2_000_000_000, 2_000_000_000))
    report = engine.index([root])
    assert (report.updated, report.failed) == (1, [])
    assert len(engine) == 3 and engine.info()["failed_count"] == 0
    row = engine.catalog.rows_by_path([str(victim)])[str(victim)]
    assert row.status == "ok" and row.id == victim_id


def test_paths_with_spaces_and_non_ascii_index_and_query_by_path(make_engine, tmp_path: Path) -> None:
    photos = bi.sample_photos(3, "butterfly")
    root = tmp_path / "my photos"
    paths = [root / "été 日本.jpg", root / "sub dir" / "naïve – ñ (copy).png", root / "emoji 📷.JPEG"]
    paths[1].parent.mkdir(parents=True)
    shutil.copyfile(photos[0], paths[0])
    Image.open(photos[1]).save(paths[1])
    shutil.copyfile(photos[2], paths[2])

    engine = make_engine()
    report = engine.index([root])
    assert (report.added, report.failed) == (3, [])
    assert _ok_paths(engine, root) == {str(p) for p in paths}  # exact round trip through the catalog

    own_id = engine.catalog.rows_by_path([str(paths[0])])[str(paths[0])].id
    for query in (str(paths[0]), paths[0]):  # an indexed path is looked up, and left out
        hits = engine.search(query, k=5)
        assert len(hits) == 2 and own_id not in {h.id for h in hits}
        assert {h.path for h in hits} == {str(paths[1]), str(paths[2])}
        assert all(os.path.exists(h.path) for h in hits)
    with Image.open(paths[0]) as img:  # the same pixels as a query find the non-ASCII path
        top = engine.search(img.copy(), k=1)[0]
    assert top.path == str(paths[0]) and top.score > 0.99


def test_file_name_that_is_not_utf8_does_not_abort_indexing(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    photos = bi.sample_photos(3)
    for p in photos[:2]:
        shutil.copyfile(p, root / p.name)
    latin1 = os.path.join(os.fsencode(root), b"caf\xe9.jpg")  # "café.jpg" written in Latin-1
    try:
        shutil.copyfile(photos[2], latin1)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 file names")
    engine = make_engine()
    report = engine.index([root])
    assert len(engine) == 2  # the good files are indexed
    assert report.added == 2
    assert [(p.endswith("caf\\xe9.jpg"), "UTF-8" in why) for p, why in report.failed] == [(True, True)]


@pytest.mark.parametrize("stage", ["hashing", "decoding"])
def test_unreadable_file_is_recorded_as_permission_denied(make_engine, tmp_path: Path, stage: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, where chmod 000 blocks nothing: refuse the reads instead.
    root = tmp_path / "photos"
    root.mkdir()
    photos = bi.sample_photos(3)
    for p in photos:
        shutil.copyfile(p, root / p.name)
    locked = str(root / photos[1].name)
    denied = PermissionError(13, "Permission denied", locked)
    if stage == "hashing":
        real_digest = retrieval.indexing.plan.file_digest

        def digest(path):
            if os.fspath(path) == locked:
                raise denied
            return real_digest(path)

        monkeypatch.setattr(retrieval.indexing.plan, "file_digest", digest)
    else:
        real_read = retrieval.images.batches.read_file

        def read_file(path, *a, **k):
            if os.fspath(path) == locked:
                raise BadImageError(os_reason(denied))
            return real_read(path, *a, **k)

        monkeypatch.setattr(retrieval.images.batches, "read_file", read_file)

    engine = make_engine()
    report = engine.index([root])
    assert _failed(report) == {locked: "permission denied"}
    assert report.added == 2 and len(engine) == 2
    assert engine.info()["failed"] == [{"path": locked, "error": "permission denied"}]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_unreadable_file_by_mode_is_recorded_as_permission_denied(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    bi.copy_photos(root, 2)
    locked = root / "locked.jpg"
    shutil.copyfile(bi.sample_photos(3)[2], locked)
    locked.chmod(0)
    try:
        engine = make_engine()
        report = engine.index([root])
    finally:
        locked.chmod(0o644)
    assert _failed(report) == {str(locked): "permission denied"}
    assert len(engine) == 2


def test_symlink_loops_and_broken_links_while_indexing(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    expected = bi.write_loop_tree(root)
    os.symlink("missing.jpg", root / "broken.jpg")
    os.symlink("loop.jpg", root / "loop.jpg")
    engine = make_engine()
    report = engine.index([root])
    failed = _failed(report)
    assert set(failed) == {str(root / "broken.jpg"), str(root / "loop.jpg")}
    assert "not found" in failed[str(root / "broken.jpg")]
    assert "symbolic link" in failed[str(root / "loop.jpg")].lower()
    assert report.added == 2 and len(engine) == 2 and _ok_paths(engine, root) == expected


def test_add_records_unsupported_missing_and_folder_paths(make_engine, tmp_path: Path) -> None:
    svg = tmp_path / "drawing.svg"
    svg.write_text("<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    folder = tmp_path / "folder"
    folder.mkdir()
    album = tmp_path / "album.jpg"
    album.mkdir()
    good = tmp_path / "good.jpg"
    shutil.copyfile(bi.sample_photos(1)[0], good)
    missing = tmp_path / "missing.jpg"

    engine = make_engine()
    report = engine.add([svg, txt, missing, folder, album, good])
    failed = _failed(report)
    assert set(failed) == {str(svg), str(txt), str(missing), str(folder), str(album)}
    assert "unsupported" in failed[str(svg)] and "unsupported" in failed[str(txt)]
    assert "unsupported" in failed[str(folder)]
    assert "not found" in failed[str(missing)]
    assert "directory" in failed[str(album)].lower()
    assert report.added == 1 and len(engine) == 1
    assert engine.info()["failed_count"] == 5


def test_missing_root_is_an_error_and_removes_nothing(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    bi.copy_photos(root, 2)
    engine = make_engine()
    engine.index([root])
    with pytest.raises(RetrievalError, match="folder not found"):
        engine.index([root, tmp_path / "no such folder"])
    assert len(engine) == 2
