"""`retrieve train`: bad training data is one line on stderr, exit 2, and no checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval.cli.app import app
from retrieval.extractors.checkpoint import MODEL_FILE

from ..modelhelpers import labelled_photos
from .conftest import one_error_line

runner = CliRunner()


@pytest.mark.parametrize("case", ["empty folder", "one class", "missing csv path", "no such path"])
def test_bad_training_data_is_one_line_and_exit_2(case: str, tmp_path: Path, sample_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if case == "one class":
        shutil.copytree(sample_dir / "cup", data / "cup")
    elif case == "missing csv path":
        data = tmp_path / "list.csv"
        data.write_text(f"{labelled_photos(sample_dir)[0]},a\n{tmp_path / 'gone.jpg'},b\n")
    elif case == "no such path":
        data = tmp_path / "nowhere"
    result = runner.invoke(app, ["train", "triplet", str(data), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    expected = {"empty folder": "no images", "one class": "at least 2 classes", "missing csv path": "do not exist",
                "no such path": "not found"}[case]
    assert expected in line
    assert not (tmp_path / "out" / MODEL_FILE).exists()
    result = runner.invoke(app, ["train", "autoencoder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ae")])
    assert result.exit_code == 2 and "not found" in one_error_line(result)
