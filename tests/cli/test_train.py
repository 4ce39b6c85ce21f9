"""`retrieve train`: bad training data is one line on stderr, exit 2, and no checkpoint."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval.cli.app import app
from retrieval.extractors.checkpoint import CONFIG_FILE, MODEL_FILE

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


@pytest.mark.usefixtures("one_thread")
def test_a_small_run_says_what_falls_short_and_leaves_only_the_checkpoint(
        tmp_path: Path, sample_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's case: 3 classes, a 6-image validation split, 16 classes per batch asked.
    Both shortfalls are said (the counts included); the finished folder holds no resume files."""
    data = tmp_path / "three"
    for cls in ("cup", "chair", "starfish"):
        shutil.copytree(sample_dir / cls, data / cls)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, "retrieval.training"):
        result = runner.invoke(app, [
            "train", "triplet", str(data), "--out", str(out), "-q", "--epochs", "1", "--image-size", "64",
            "--embed-size", "64", "--cache-views", "1", "--val-fraction", "0.4", "--classes-per-batch", "16",
            "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    said = [r.getMessage() for r in caplog.records]
    assert any("validation split holds only 6 images (3 classes)" in m for m in said), said
    assert any("16 classes per batch asked" in m and "only 3 classes" in m for m in said), said
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, MODEL_FILE]


@pytest.mark.parametrize("command", ["triplet", "autoencoder"])
def test_help_shows_the_trainers_own_defaults(command: str) -> None:
    """The options are None on the command line (the settings classes own the defaults);
    the defaults --help shows as text must be those classes' values."""
    import typer

    from retrieval.training.autoencoder import AutoencoderSettings
    from retrieval.training.triplet import TripletSettings

    settings = TripletSettings() if command == "triplet" else AutoencoderSettings()
    cli = typer.main.get_command(app).commands["train"].commands[command]  # type: ignore[attr-defined]
    shown = {p.name: p.show_default for p in cli.params
             if p.default is None and isinstance(p.show_default, str) and p.name != "workers"}  # workers: prose
    assert len(shown) >= 12
    for name, text in shown.items():
        owner = settings if hasattr(settings, name) else settings.corruptions  # type: ignore[union-attr]
        assert text == str(getattr(owner, name)), name
