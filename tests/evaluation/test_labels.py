"""Labelled image sets (retrieval/evaluation/labels.py): from a folder of class folders or
from a CSV list, and their stratified, repeatable split."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import pytest

from retrieval.errors import RetrievalError
from retrieval.evaluation.labels import read_labelled


def test_folder_and_csv_give_the_same_labelled_set(sample_dir: Path, tmp_path: Path) -> None:
    from_folder = read_labelled(sample_dir)
    assert len(from_folder) == 50 and len(from_folder.classes) == 10
    listing = tmp_path / "lists" / "all.csv"
    listing.parent.mkdir()
    with open(listing, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])  # a header is skipped
        for path, label in zip(from_folder.paths, from_folder.labels):
            rel = Path("..") / Path(path).relative_to(tmp_path)  # relative to the list's folder
            w.writerow([rel, label] if label != "cup" else [rel])  # no label: the parent folder names it
    from_csv = read_labelled(listing)
    assert sorted(zip(from_csv.paths, from_csv.labels)) == sorted(zip(from_folder.paths, from_folder.labels))


def test_split_holds_out_part_of_every_class_and_repeats(sample_dir: Path) -> None:
    images = read_labelled(sample_dir)
    train, val = images.split(0.4, seed=3)
    assert len(train) == 30 and len(val) == 20
    assert all(val.labels.count(c) == 2 for c in images.classes)
    assert not set(train.paths) & set(val.paths)
    assert images.split(0.4, seed=3) == (train, val)
    assert images.split(0.4, seed=4)[1] != val


def test_images_outside_class_folders_give_one_line_not_one_per_file(
        sample_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for n, photo in enumerate(sorted((sample_dir / "cup").iterdir())):
        shutil.copy(photo, flat / f"{n}.jpg")
    with pytest.raises(RetrievalError, match=r"no images in class folders below .*\(5 images lie directly in it\)"):
        read_labelled(flat)
    assert "ignoring" not in caplog.text  # the error alone
    shutil.copy(flat / "0.jpg", sample_dir / "loose.jpg")
    shutil.copy(flat / "1.jpg", sample_dir / "loose2.jpg")
    with caplog.at_level(logging.WARNING):
        images = read_labelled(sample_dir)
    assert len(images) == 50
    warnings = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("ignoring 2 images not inside a class folder")
