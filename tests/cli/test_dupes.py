"""`retrieve dupes` finishing the job on a small photo library: each file's size, pixels
and date, the keep rules, moving or trashing the other copies (a dry run until --apply)
so that they leave the index for good, failures that stop one file only, and the
perceptual hash that tells a resized re-encode from another shot of the scene."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from retrieval import Engine
from retrieval.cli import dupes as dupes_cli
from retrieval.duplicates import KEEP_RULES

from ..images.camerafiles import exif_block
from .conftest import invoke, one_error_line


@dataclass(frozen=True)
class Library:
    root: Path
    bundle: Path
    trio: tuple[Path, Path, Path]  # byte-identical: a.jpg, sub/a.jpg, other/a.jpg
    star: Path  # a photo ...
    star_small: Path  # ... and its 3/4-size re-encode, with an EXIF date taken
    star_other: Path  # another photo of the same class


def _at(path: Path, year: int) -> None:
    stamp = datetime(year, 6, 1, 12, 0, 0).timestamp()
    os.utime(path, (stamp, stamp))


@pytest.fixture()
def library(tmp_path: Path, sample_dir: Path, make_engine: Callable[..., Engine]) -> Library:
    root = tmp_path / "library"
    trio = (root / "a.jpg", root / "sub" / "a.jpg", root / "other" / "a.jpg")
    for path, year in zip(trio, (2015, 2010, 2020)):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_dir / "dolphin" / "image_0002.jpg", path)
        _at(path, year)
    star, star_small, star_other = root / "star.jpg", root / "star small.jpg", root / "star other.jpg"
    shutil.copyfile(sample_dir / "starfish" / "image_0001.jpg", star)
    shutil.copyfile(sample_dir / "starfish" / "image_0004.jpg", star_other)
    with Image.open(star) as im:
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.LANCZOS).save(
            star_small, "JPEG", quality=80, exif=exif_block(taken="2005:06:07 08:09:10").tobytes())
    _at(star, 2012)
    _at(star_small, 2024)  # newer by its file date, older by its date taken
    for name in ("image_0001.jpg", "image_0007.jpg"):
        shutil.copyfile(sample_dir / "cup" / name, root / f"cup {name}")
    engine = make_engine()
    engine.index([root])
    engine.close()
    return Library(root, engine.path, trio, star, star_small, star_other)


def _json(*args: str) -> Any:
    result = invoke("dupes", *args, "--json", "-q")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _groups(lib: Library, *args: str) -> list[set[str]]:
    return [{f["path"] for f in g["files"]} for g in _json("-i", str(lib.bundle), *args)]


def _indexed(lib: Library) -> set[str]:
    with Engine.open(lib.bundle) as engine:
        return {info.path for info in engine.browse(limit=1000).images}


def test_each_file_shows_size_pixels_and_date_and_each_rule_keeps_one(library: Library) -> None:
    trio, star, small = [str(p) for p in library.trio], str(library.star), str(library.star_small)
    groups = _json("-i", str(library.bundle))
    assert sorted(sorted(f["path"] for f in g["files"]) for g in groups) == sorted([sorted(trio), sorted([star, small])])
    files = {f["path"]: f for g in groups for f in g["files"]}
    with Image.open(library.star) as im:
        assert (files[star]["width"], files[star]["height"]) == im.size
    assert files[small]["size"] == library.star_small.stat().st_size
    assert (files[small]["date"], files[small]["date_taken"]) == ("2005-06-07T08:09:10", True)
    assert (files[trio[1]]["date"], files[trio[1]]["date_taken"]) == ("2010-06-01T12:00:00", False)

    expected = {  # trio: identical, so largest falls back to path order; the pair: taken beats modified
        "largest": {trio[0], star}, "oldest": {trio[1], small}, "newest": {trio[2], star}, "path-order": {trio[0], small},
    }
    assert set(expected) == set(KEEP_RULES) == set(dupes_cli.KEEP_CHOICES)
    for rule, kept in expected.items():
        groups = _json("-i", str(library.bundle), "--keep", rule)
        assert {g["keep"] for g in groups} == kept, rule
        assert all([f["path"] for f in g["files"] if f["keep"]] == [g["keep"]] for g in groups)


def test_text_output_adds_the_facts_after_the_columns_it_always_had(library: Library) -> None:
    result = invoke("dupes", "-i", str(library.bundle), "-q")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["group", "id", "score", "path", "size", "pixels", "date", "action"]
    by_path = {r[3]: r for r in rows[1:]}
    assert by_path[str(library.star_small)][6] == "taken 2005-06-07 08:09:10"
    assert by_path[str(library.trio[1])][6] == "modified 2010-06-01 12:00:00"
    assert [r[7] for r in rows[1:]].count("keep") == 2 and {r[7] for r in rows[1:]} == {"keep", "copy"}
    with Image.open(library.star) as im:
        assert by_path[str(library.star)][5] == f"{im.width}x{im.height}"


def test_move_to_is_a_dry_run_until_apply_and_moved_files_stay_out(library: Library) -> None:
    """The target folder is inside the indexed root: the next index run walks it, and
    must not take the moved copies back."""
    target = library.root / "dupes"
    before = _indexed(library)
    dry = invoke("dupes", "-i", str(library.bundle), "-q", "--move-to", str(target))
    assert dry.exit_code == 0, dry.output
    assert "would move to" in dry.stdout and "dry run" in dry.stderr
    assert not target.exists() and _indexed(library) == before

    applied = _json("-i", str(library.bundle), "--move-to", str(target), "--apply")
    kept = {g["keep"] for g in applied}
    assert kept == {str(library.trio[0]), str(library.star)}
    moved = {f["path"]: f["dest"] for g in applied for f in g["files"] if not f["keep"]}
    assert all(f["done"] and f["error"] is None for g in applied for f in g["files"] if not f["keep"])
    assert sorted(Path(d).name for d in moved.values()) == ["a (2).jpg", "a.jpg", "star small.jpg"]
    assert all(Path(d).parent == target and Path(d).is_file() and not Path(p).exists() for p, d in moved.items())
    assert all(Path(k).is_file() for k in kept)
    assert _indexed(library) == before - set(moved)

    with Engine.open(library.bundle) as engine:
        report = engine.index([library.root])
    assert report.added == 0 and _indexed(library) == before - set(moved)
    assert _groups(library) == []


def test_one_file_failing_is_reported_and_the_others_go_on(library: Library, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    """A copy changed since indexing is left; a move that fails is left; the kept file
    of a group being gone leaves its copies; everything else moves."""
    library.trio[2].write_bytes(library.trio[2].read_bytes() + b"\0")  # other/a.jpg changed
    real_move = shutil.move

    def move(src: str, dst: str) -> Any:
        if src == str(library.trio[1]):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_move(src, dst)

    monkeypatch.setattr(shutil, "move", move)
    library.star.unlink()  # the pair's kept file (largest) is gone
    target = tmp_path / "set-aside"
    result = invoke("dupes", "-i", str(library.bundle), "-q", "--move-to", str(target), "--apply", "--json")
    assert result.exit_code == 0, result.output
    files = {f["path"]: f for g in json.loads(result.stdout) for f in g["files"]}
    assert "changed since it was indexed" in files[str(library.trio[2])]["error"]
    assert files[str(library.trio[1])]["error"] == "Permission denied"
    assert f"kept file {library.star} is gone" in files[str(library.star_small)]["error"]
    assert not any(f.get("done") for f in files.values())
    assert library.star_small.is_file() and library.trio[1].is_file() and library.trio[2].is_file()
    assert result.stderr.count("left ") == 3 and "would" not in result.stderr

    monkeypatch.setattr(shutil, "move", real_move)  # the same files, now fine, all go
    library.trio[2].write_bytes(library.trio[1].read_bytes())
    with Engine.open(library.bundle) as engine:
        engine.index([library.root])
    again = _json("-i", str(library.bundle), "--move-to", str(target), "--apply")
    assert [sorted(f["path"] for f in g["files"] if f.get("done")) for g in again] == \
        [sorted([str(library.trio[1]), str(library.trio[2])])]


def test_trash_sends_the_copies_to_the_desktop_trash(library: Library, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    result = invoke("dupes", "-i", str(library.bundle), "-q", "--exact", "--trash", "--apply")
    assert result.exit_code == 0, result.output
    trashed = list((tmp_path / "xdg" / "Trash" / "files").iterdir())
    assert len(trashed) == 2 and all(p.read_bytes() == library.trio[0].read_bytes() for p in trashed)
    assert library.trio[0].is_file() and not library.trio[1].exists() and not library.trio[2].exists()
    assert "trashed: 2 files" in result.stderr and "removed from the index" in result.stderr
    assert not ({str(library.trio[1]), str(library.trio[2])} & _indexed(library))


def test_phash_keeps_the_re_encode_and_splits_off_another_shot(library: Library) -> None:
    with Engine.open(library.bundle) as engine:
        ids = {i.path: i.id for i in engine.browse(limit=1000).images}
        star, small, other = engine.vectors([ids[str(p)] for p in
                                             (library.star, library.star_small, library.star_other)])
    threshold = f"{min(float(star @ small), float(star @ other)) - 0.01:.4f}"  # low enough to join the other shot
    loose = _groups(library, "--threshold", threshold)
    trio = {str(p) for p in library.trio}
    assert {str(library.star), str(library.star_small), str(library.star_other)} <= \
        next(g for g in loose if str(library.star) in g)
    confirmed = _groups(library, "--threshold", threshold, "--phash")
    assert trio in confirmed and {str(library.star), str(library.star_small)} in confirmed
    assert not any(str(library.star_other) in g for g in confirmed)


def test_sheet_shows_each_group_with_the_kept_file_marked(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "dupes.html"
    target = tmp_path / "aside"
    result = invoke("dupes", "-i", str(library.bundle), "-q", "--sheet", str(out), "--move-to", str(target),
                    "--apply")
    assert result.exit_code == 0, result.output
    page = out.read_text()
    sections = page.split("<section>")[1:]
    assert len(sections) == 2 and "group 1: identical" in sections[0]
    pair = next(s for s in sections if str(library.star) in s)
    figures = pair.split("<figure>")[1:]
    assert len(figures) == 2 and all("data:image/jpeg;base64," in f for f in figures)  # drawn before the move
    kept = next(f for f in figures if f"{library.star}<" in f)
    assert "keep · " in kept and "taken 2005-06-07 08:09:10" in pair
    assert page.count("keep · ") == 2 and page.count("copy · ") == 3


@pytest.mark.parametrize(("args", "message"), [
    (["--move-to", "x", "--trash"], "not both"),
    (["--apply"], "nothing to apply"),
    (["--keep", "biggest"], "largest, oldest, newest, path-order"),
    (["--exact", "--phash"], "--phash or --exact"),
    (["--sheet", "out.pdf"], ".html or .jpg"),
])
def test_contradictory_options_are_one_line(library: Library, args: list[str], message: str) -> None:
    assert message in one_error_line(invoke("dupes", "-i", str(library.bundle), *args))


def test_phash_without_imagehash_says_which_extra_before_searching(library: Library,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imagehash", None)
    searched: list[object] = []
    monkeypatch.setattr(Engine, "duplicates", lambda *args, **kwargs: searched.append(args) or [])
    assert "retrieve[phash]" in one_error_line(invoke("dupes", "-i", str(library.bundle), "-q", "--phash"))
    assert searched == []
