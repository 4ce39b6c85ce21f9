"""`retrieve index` keeps to the folders it is given unless --follow-links says otherwise."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from retrieval import Engine

from .conftest import invoke


def test_links_out_of_the_folder_are_left_out_unless_followed(make_engine: Callable[..., Engine],
                                                               sample_dir: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir / "cup"])
    engine.close()
    os.symlink(sample_dir / "chair", sample_dir / "cup" / "chairs")  # a link to a folder outside "cup"

    kept = invoke("index", str(sample_dir / "cup"), "-i", str(engine.path), "--json", "-q")
    assert kept.exit_code == 0, kept.output
    report = json.loads(kept.stdout)
    assert (report["added"], report["skipped"]) == (0, 1)
    assert report["skipped_files"][0]["path"] == str(sample_dir / "cup" / "chairs")

    followed = invoke("index", str(sample_dir / "cup"), "-i", str(engine.path), "--json", "-q", "--follow-links",
                      "--device", "cpu", "--workers", "0")
    assert followed.exit_code == 0, followed.output
    assert (json.loads(followed.stdout)["added"], json.loads(followed.stdout)["skipped"]) == (5, 0)
