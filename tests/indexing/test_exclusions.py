"""Removals that stick (issue 14, point 5), through the API: exclusions recorded in the
catalog leave paths out of every later `index` and `add`, until they are forgotten."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from retrieval.errors import RetrievalError
from retrieval.indexing.exclusions import Exclusions, pattern_for

from ..badimages import copy_photos


def test_excluded_images_are_removed_now_and_left_out_later(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    kept = copy_photos(root / "trip", 2)
    drafts = copy_photos(root / "drafts", 2, "chair")
    engine = make_engine()
    assert engine.index([root]).added == 4

    removed, patterns = engine.exclude(["*/drafts/*"])
    assert (removed, patterns, engine.exclusions()) == (2, ["*/drafts/*"], ["*/drafts/*"])
    report = engine.index([root])
    assert (report.added, report.excluded, report.unchanged, len(engine)) == (0, 2, 2, 2)
    report = engine.add([drafts[0]])
    assert (report.added, report.excluded, len(engine)) == (0, 1, 2), "an explicit add honours them too"
    assert {r.path for r in engine.catalog.rows_by_path(map(str, kept + drafts)).values()} == set(map(str, kept))

    assert engine.forget_exclusions(["*/drafts/*", "*/never/*"]) == ["*/drafts/*"]
    report = engine.index([root])
    assert (report.added, report.excluded, len(engine)) == (2, 0, 4)


def test_an_exclusion_recorded_before_indexing_sweeps_what_it_matches(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    copy_photos(root, 3)
    engine = make_engine()
    engine.index([root])
    victim = sorted(root.iterdir())[0]
    engine.catalog.change_exclusions(add=[glob.escape(str(victim))])  # as another process would record it
    report = engine.index([root])
    assert (report.removed, report.removed_paths, len(engine)) == (1, [str(victim)], 2)


def test_unknown_ids_and_paths_are_errors_and_remove_nothing(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    photos = copy_photos(root, 2)
    engine = make_engine()
    engine.index([root])
    for items in ([1, 999], [str(photos[0]), str(root / "missing.jpg")]):
        with pytest.raises(RetrievalError, match="not in the index"):
            engine.exclude(items)
    assert len(engine) == 2 and engine.exclusions() == []
    assert engine.exclude([str(root / "future.jpg")], strict=False) == (0, [str(root / "future.jpg")])


def test_patterns_from_what_a_user_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "album").mkdir()
    assert pattern_for("album") == f"{tmp_path}/album/*"  # a folder: all below it
    assert pattern_for("drafts/*.jpg") == f"{tmp_path}/drafts/*.jpg"  # anchored where it was typed
    assert pattern_for("*.tmp.jpg") == "*.tmp.jpg"  # anywhere
    (tmp_path / "shots [1].jpg").write_bytes(b"")
    odd = pattern_for("shots [1].jpg")  # an existing file: its brackets are brackets
    rules = Exclusions([odd])
    assert rules.excludes(f"{tmp_path}/shots [1].jpg") and not rules.excludes(f"{tmp_path}/shots 1.jpg")
    rules = Exclusions(["*/@tmp/*", f"{tmp_path}{os.sep}x?.png"])
    assert rules.excludes("/a/@tmp/b/c.jpg") and rules.excludes(f"{tmp_path}/x1.png")
    assert not rules.excludes(f"{tmp_path}/x10.png") and not Exclusions([])
