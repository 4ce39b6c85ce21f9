"""Bad input, at every level: decoding, discovery, indexing, and the command line.

Corrupt, truncated, zero-byte, non-image, unsupported and decompression-bomb files;
CMYK, 16-bit, palette, alpha and EXIF-rotated images; paths with spaces, non-ASCII
and non-UTF-8 bytes; unreadable files; symlink loops. Indexing records each failure
with its reason, goes on, and loses nothing indexed before; the CLI turns a bad query
image or a missing index into one line on stderr and exit code 2.

All files are generated (see tests/badimages.py); only a handful of sample photos are
embedded, with the session's shared model.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
from PIL import Image
from typer.testing import CliRunner

import retrieval.images.batches
import retrieval.indexing.plan
from retrieval import Engine, RetrievalError
from retrieval.cli.app import app
from retrieval.errors import BadImageError
from retrieval.images.decode import MAX_PIXELS, load_image
from retrieval.images.batches import DecodeDataset, collate_decoded
from retrieval.images.preprocess import Preprocessor
from retrieval.images.files import discover, os_reason

from . import badimages as bi

runner = CliRunner()


# ====================================================================== helpers and fixtures


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One read-only set of every undecodable kind (the real bomb costs ~0.4 s to write)."""
    d = tmp_path_factory.mktemp("undecodable")
    for name, writer, _ in bi.UNDECODABLE.values():
        writer(d / name)
    return d


def _bad(bad_dir: Path, kind: str) -> Path:
    return bad_dir / bi.UNDECODABLE[kind][0]


def _copy_undecodable(bad_dir: Path, dest: Path) -> dict[str, str]:
    """Copy every undecodable kind into `dest`; returns {path: expected reason substring}."""
    dest.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, _, reason in bi.UNDECODABLE.values():
        shutil.copyfile(bad_dir / name, dest / name)
        expected[str(dest / name)] = reason
    return expected


def _rgb(decoded) -> np.ndarray:
    assert decoded.image.mode == "RGB"
    return np.asarray(decoded.image).astype(int)


def _is_red(px: np.ndarray) -> bool:
    return px[0] > 200 and px[1] < 70 and px[2] < 70


def _is_white(px: np.ndarray) -> bool:
    return bool((px > 220).all())


def _corners(a: np.ndarray) -> dict[str, np.ndarray]:
    """Mean colour of a small patch well inside each corner."""
    h, w = a.shape[:2]
    ph, pw = max(1, h // 10), max(1, w // 10)
    y0, y1, x0, x1 = 1, h - 1 - ph, 1, w - 1 - pw
    return {
        "top-left": a[y0:y0 + ph, x0:x0 + pw].reshape(-1, 3).mean(0),
        "top-right": a[y0:y0 + ph, x1:x1 + pw].reshape(-1, 3).mean(0),
        "bottom-left": a[y1:y1 + ph, x0:x0 + pw].reshape(-1, 3).mean(0),
        "bottom-right": a[y1:y1 + ph, x1:x1 + pw].reshape(-1, 3).mean(0),
    }


def _failed(report) -> dict[str, str]:
    paths = [p for p, _ in report.failed]
    assert len(paths) == len(set(paths)), f"a file was reported failed twice: {paths}"
    return dict(report.failed)


def _ok_paths(engine: Engine, root: Path) -> set[str]:
    return {p for p, r in engine.catalog.rows_under([str(root)]).items() if r.status == "ok"}


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _squash(text: str) -> str:
    """Text with all whitespace removed, to compare paths across console line folds."""
    return "".join(text.split())


# ====================================================================== load_image


@pytest.mark.parametrize("kind", sorted(bi.UNDECODABLE))
@pytest.mark.parametrize("draft_size", [None, 224], ids=["full", "draft"])
def test_undecodable_file_raises_bad_image_error_with_its_reason(bad_dir: Path, kind: str,
                                                                 draft_size: int | None) -> None:
    path = _bad(bad_dir, kind)
    with pytest.raises(BadImageError) as info:
        load_image(path, draft_size=draft_size)
    reason = str(info.value)
    assert bi.UNDECODABLE[kind][2] in reason
    assert "\n" not in reason and reason.strip() == reason


def test_decompression_bomb_is_refused_by_default_before_decoding(bad_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _bad(bad_dir, "bomb")
    assert bomb.stat().st_size < 100_000, "the bomb must be small on disk"
    with Image.open(bomb) as img:  # a real, valid file: only its size is the problem
        assert img.size == (12_000, 12_000) and img.width * img.height > MAX_PIXELS

    def no_decoding(self, *a, **k):
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", no_decoding)
    # Our limit names the size; far beyond it, Pillow's own guard (which we leave in
    # place for the host process) refuses first and names the pixel count.
    for path, sizes in [(bomb, ("12000x12000",)), (_bad(bad_dir, "bomb_header"), ("100000x100000", "10000000000 pixels"))]:
        with pytest.raises(BadImageError, match="decompression bomb") as info:
            load_image(path)
        assert any(size in str(info.value) for size in sizes), str(info.value)


def test_max_pixels_limit_is_inclusive(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(path)
    assert load_image(path, max_pixels=64 * 64).image.size == (64, 64)
    with pytest.raises(BadImageError, match="over the limit of 4,095"):
        load_image(path, max_pixels=64 * 64 - 1)


def test_unreadable_file_reason_is_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.jpg"
    shutil.copyfile(bi.sample_photos(1)[0], locked)
    real_open = os.open

    def guarded_open(path, *a, **k):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", guarded_open)
    with pytest.raises(BadImageError, match="permission denied"):
        load_image(locked)


def test_missing_file_and_directory_reasons(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "album.jpg").mkdir()
    with pytest.raises(BadImageError, match="directory"):
        load_image(tmp_path / "album.jpg")


@pytest.mark.parametrize("draft_size", [None, 8], ids=["full", "draft"])
def test_cmyk_jpeg_decodes_to_rgb_with_its_colours(tmp_path: Path, draft_size: int | None) -> None:
    src = Image.open(bi.write_cmyk_jpeg(tmp_path / "cmyk.jpg"))
    assert src.mode == "CMYK"
    decoded = load_image(tmp_path / "cmyk.jpg", draft_size=draft_size)
    a = _rgb(decoded)
    h, w = a.shape[:2]
    assert (decoded.width, decoded.height) == (64, 32)
    left, right = a[h // 2, w // 4], a[h // 2, 3 * w // 4]
    assert np.abs(left - bi.RED).max() <= 12, left
    assert np.abs(right - bi.BLUE).max() <= 12, right


def test_16_bit_gradient_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = bi.write_gray16_png(tmp_path / "gray16.png")
    with Image.open(path) as src:
        assert src.mode.startswith("I")
        raw = np.asarray(src)
        assert raw[0, 128] > 32_000  # mid-grey in 16 bits
    a = _rgb(load_image(path))
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    row = a[0, :, 0]
    assert row[0] <= 1 and row[-1] >= 254
    assert abs(int(row[128]) - 128) <= 2, row[128]  # 32896 / 65535 of white, not clipped to 255
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 200  # the gradient survives


def test_dark_16_bit_image_stays_dark(tmp_path: Path) -> None:
    path = bi.write_gray16_png(tmp_path / "dark16.png", top=255)
    with Image.open(path) as src:
        assert src.mode == "I;16"
    a = _rgb(load_image(path))
    assert a.max() <= 1, f"16-bit values <= 255 of 65535 came out as {a.max()}"


@pytest.mark.parametrize("transparent", [False, True], ids=["opaque", "transparent"])
def test_palette_png_decodes_to_rgb(tmp_path: Path, transparent: bool) -> None:
    path = bi.write_palette_png(tmp_path / "palette.png", transparent)
    with Image.open(path) as src:
        assert src.mode == "P" and ("transparency" in src.info) == transparent
    a = _rgb(load_image(path))
    assert tuple(a[8, 4]) == bi.RED
    assert tuple(a[8, 24]) == (bi.WHITE if transparent else bi.BLUE)


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    path = bi.write_rgba_png(tmp_path / "rgba.png")
    a = _rgb(load_image(path))
    assert tuple(a[15, 5]) == bi.RED  # opaque stays
    assert tuple(a[15, 30]) == bi.WHITE  # fully transparent black shows the white background
    assert all(abs(v - 127) <= 2 for v in a[5, 30]), a[5, 30]  # half-transparent black: mid-grey


EXIF_CASES = {  # orientation: (upright size of the 60x40 stored image, corner the marker lands in)
    3: ((60, 40), "bottom-right"),
    6: ((40, 60), "top-right"),
    8: ((40, 60), "bottom-left"),
}


@pytest.mark.parametrize("orientation", sorted(EXIF_CASES))
def test_exif_rotated_jpeg_is_decoded_upright(tmp_path: Path, orientation: int) -> None:
    path = bi.write_exif_rotated_jpeg(tmp_path / f"exif{orientation}.jpg", orientation)
    with Image.open(path) as src:
        assert src.size == (60, 40) and src.getexif()[bi.EXIF_ORIENTATION] == orientation
    decoded = load_image(path)
    size, marker = EXIF_CASES[orientation]
    assert decoded.image.size == size and (decoded.width, decoded.height) == size
    corners = _corners(_rgb(decoded))
    assert _is_red(corners[marker]), (marker, corners)
    assert all(_is_white(c) for name, c in corners.items() if name != marker), corners


def test_exif_rotated_jpeg_decoded_at_draft_scale_keeps_full_upright_size(tmp_path: Path) -> None:
    path = bi.write_exif_rotated_jpeg(tmp_path / "big6.jpg", 6, size=(1200, 800))
    decoded = load_image(path, draft_size=224)  # what the indexer does
    assert decoded.image.width < decoded.image.height  # upright: portrait
    assert max(decoded.image.size) < 1200  # really decoded at a reduced scale
    assert (decoded.width, decoded.height) == (800, 1200)  # the file's full size, upright
    corners = _corners(_rgb(decoded))
    assert _is_red(corners["top-right"]) and _is_white(corners["top-left"]), corners


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_garbage_exif_block_is_ignored(tmp_path: Path) -> None:
    junk = b"Exif\x00\x00" + np.random.default_rng(3).bytes(64)
    path = bi.write_exif_rotated_jpeg(tmp_path / "junk-exif.jpg", 1, exif=junk)
    decoded = load_image(path)
    assert decoded.image.size == (60, 40)
    assert _is_red(_corners(_rgb(decoded))["top-left"])


def test_decode_dataset_turns_bad_files_into_errors(bad_dir: Path) -> None:
    good = str(bi.sample_photos(1)[0])
    kinds = sorted(bi.UNDECODABLE)
    paths = [good] + [str(_bad(bad_dir, k)) for k in kinds]
    dataset = DecodeDataset(paths, Preprocessor(224))
    items = [dataset[i] for i in range(len(dataset))]  # never raises
    assert items[0].error is None and items[0].pixels.shape == (224, 224, 3)
    for kind, item in zip(kinds, items[1:]):
        assert item.pixels is None and bi.UNDECODABLE[kind][2] in item.error, (kind, item.error)
    batch = collate_decoded(items)
    assert batch.indices == [0] and tuple(batch.pixels.shape) == (1, 224, 224, 3)
    assert [d.index for d in batch.failures] == list(range(1, len(paths)))


# ====================================================================== discovery


def _loop_tree(root: Path) -> set[str]:
    """photos/{a/x.jpg, a/up -> .., b/y.png, b/here -> .}; returns the two image paths."""
    photos = bi.sample_photos(2)
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copyfile(photos[0], root / "a" / "x.jpg")
    Image.open(photos[1]).save(root / "b" / "y.png")
    os.symlink("..", root / "a" / "up")  # to its own parent: a loop
    os.symlink(".", root / "b" / "here")  # to itself
    return {str(root / "a" / "x.jpg"), str(root / "b" / "y.png")}


def test_discover_terminates_on_symlink_loops_and_yields_each_image_once(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    expected = _loop_tree(root)
    found = [str(p) for p in itertools.islice(discover([root]), 1000)]  # bounded: a loop cannot hang
    assert sorted(found) == sorted(expected)
    # overlapping roots, and a root reached through the loop, add nothing
    found = [str(p) for p in itertools.islice(discover([root, root / "a", root / "a" / "up" / "b"]), 1000)]
    assert sorted(found) == sorted(expected)


def test_discover_skips_a_folder_named_like_an_image_but_enters_it(tmp_path: Path) -> None:
    album = tmp_path / "album.jpg"
    album.mkdir()
    shutil.copyfile(bi.sample_photos(1)[0], album / "inside.jpg")
    assert [str(p) for p in discover([tmp_path])] == [str(album / "inside.jpg")]


# ====================================================================== indexing


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
    root.mkdir()
    for p in bi.sample_photos(5):
        shutil.copyfile(p, root / p.name)
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
    root.mkdir()
    for p in bi.sample_photos(3):
        shutil.copyfile(p, root / p.name)
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
    root.mkdir()
    for p in bi.sample_photos(2):
        shutil.copyfile(p, root / p.name)
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
    expected = _loop_tree(root)
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


def test_bad_query_image_raises_bad_image_error_and_the_engine_keeps_working(make_engine, tmp_path: Path,
                                                                             bad_dir: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for p in bi.sample_photos(3):
        shutil.copyfile(p, root / p.name)
    engine = make_engine()
    engine.index([root])
    good = root / bi.sample_photos(1)[0].name
    for kind in ("corrupt", "truncated_jpeg", "bomb_header"):
        with pytest.raises(BadImageError, match=bi.UNDECODABLE[kind][2]):
            engine.search(_bad(bad_dir, kind))
        with pytest.raises(BadImageError):  # one bad image spoils a combined query
            engine.search([good, _bad(bad_dir, kind)])
    assert len(engine.search(good, k=5)) == 2


def test_missing_root_is_an_error_and_removes_nothing(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for p in bi.sample_photos(2):
        shutil.copyfile(p, root / p.name)
    engine = make_engine()
    engine.index([root])
    with pytest.raises(RetrievalError, match="folder not found"):
        engine.index([root, tmp_path / "no such folder"])
    assert len(engine) == 2


# ====================================================================== command line


@pytest.fixture()
def bundle(make_engine, tmp_path: Path) -> Path:
    """A small index on disk, built through the API with the shared model."""
    root = tmp_path / "indexed"
    root.mkdir()
    for p in bi.sample_photos(2):
        shutil.copyfile(p, root / p.name)
    engine = make_engine("bundle")
    engine.index([root])
    engine.close()
    return engine.path


def _assert_one_line_error(res, *, exit_code: int = 2) -> str:
    assert res.exit_code == exit_code, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and "Traceback" not in res.stderr
    assert res.stdout == ""
    lines = _lines(res.stderr)
    assert lines and lines[0].startswith("error:"), res.stderr
    return res.stderr


@pytest.mark.parametrize("kind", ["corrupt", "truncated_jpeg", "zero_byte", "non_image", "missing", "folder",
                                  "combined"])
def test_cli_bad_query_image_is_one_line_and_exit_2(bundle: Path, bad_dir: Path, tmp_path: Path,
                                                    kind: str) -> None:
    if kind == "missing":
        args, reason = [str(tmp_path / "missing.jpg")], "file not found"
    elif kind == "folder":
        (tmp_path / "a folder").mkdir()
        args, reason = [str(tmp_path / "a folder")], "is a folder"
    elif kind == "combined":  # an indexed image and a bad one
        indexed = tmp_path / "indexed" / bi.sample_photos(1)[0].name
        args, reason = [str(indexed), str(_bad(bad_dir, "corrupt"))], "not a recognised image format"
    else:
        args, reason = [str(_bad(bad_dir, kind))], bi.UNDECODABLE[kind][2]
    res = runner.invoke(app, ["query", *args, "-i", str(bundle)])
    stderr = _assert_one_line_error(res)
    assert len(_lines(stderr)) == 1, stderr
    assert reason in stderr


@pytest.mark.parametrize("command", [["query", "x.jpg"], ["info"], ["remove", "1"], ["info", "--json"]])
def test_cli_missing_index_is_an_error_exit_2(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nonexistent"
    res = runner.invoke(app, [*command, "-i", str(missing)])
    stderr = _assert_one_line_error(res)
    assert "no index at" in stderr and _squash(str(missing)) in _squash(stderr)
    assert not missing.exists(), "looking for an index must not create one"


def test_cli_index_missing_folder_is_an_error_exit_2(bundle: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["index", str(tmp_path / "gone"), "-i", str(bundle), "-q"])
    stderr = _assert_one_line_error(res)
    assert "folder not found" in stderr


def test_cli_long_error_messages_stay_on_one_line(bundle: Path, bad_dir: Path, tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-folder-name-for-an-index"] * 30)  # ~1200 characters
    for args in (["info", "-i", str(deep)],
                 ["query", "x.jpg", "-i", str(deep)],
                 ["query", str(_bad(bad_dir, "bomb_header")), "-i", str(bundle)]):
        res = runner.invoke(app, args)
        stderr = _assert_one_line_error(res)
        assert len(_lines(stderr)) == 1, stderr


def test_cli_error_shows_paths_with_brackets_verbatim(tmp_path: Path) -> None:
    for name in ("old [draft] index", "index [/old]"):
        missing = tmp_path / name
        res = runner.invoke(app, ["info", "-i", str(missing)])
        stderr = _assert_one_line_error(res)
        assert " ".join(str(missing).split()) in " ".join(stderr.split())


def test_cli_index_reports_bad_files_and_goes_on(bundle: Path, bad_dir: Path, tmp_path: Path) -> None:
    """The one CLI case that embeds: the CLI builds its own model (a few seconds)."""
    new = tmp_path / "new"
    new.mkdir()
    shutil.copyfile(bi.sample_photos(3)[2], new / "good.jpg")
    for kind in ("corrupt", "zero_byte", "bomb_header"):
        shutil.copyfile(_bad(bad_dir, kind), new / bi.UNDECODABLE[kind][0])
    os.symlink("nowhere.jpg", new / "broken.jpg")
    bad = {str(new / bi.UNDECODABLE[k][0]) for k in ("corrupt", "zero_byte", "bomb_header")}
    bad.add(str(new / "broken.jpg"))

    res = runner.invoke(app, ["index", str(new), "-i", str(bundle), "--json", "-q", "--workers", "0",
                              "--device", "cpu"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "Traceback" not in res.output
    report = json.loads(res.stdout)  # stdout is the JSON report only
    assert (report["added"], report["failed"]) == (1, len(bad))
    assert {f["path"] for f in report["failures"]} == bad
    squashed = _squash(res.stderr)
    for path in bad:
        assert _squash(f"skipped {path}:") in squashed, res.stderr

    info = json.loads(runner.invoke(app, ["info", "-i", str(bundle), "--json"]).stdout)
    assert info["count"] == 3 and info["failed_count"] == len(bad)
