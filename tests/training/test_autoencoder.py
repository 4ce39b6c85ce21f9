"""The denoising autoencoder's training: it beats the identity on held-out noisy patches,
and an interrupted run resumes exactly where it stopped.

The model trains once per session at toy size (the `autoencoder` fixture of
tests/conftest.py, shared with the extractor tests that use it).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from retrieval.cli.app import app
from retrieval.extractors.checkpoint import CONFIG_FILE, LAST_FILE, MODEL_FILE, RESUME_FILE
from retrieval.extractors.denoise import Denoiser
from retrieval.training.autoencoder import train_autoencoder
from retrieval.training.corruptions import corrupt
from retrieval.training.loop import EpochRecord

from ..cli.conftest import one_error_line
from ..modelhelpers import TINY_AE, labelled_photos

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see modelhelpers.single_thread


def test_autoencoder_reduces_the_error_of_corrupted_input(autoencoder: Path) -> None:
    training = json.loads((autoencoder / "config.json").read_text())["training"]
    assert training["initial_score"] == pytest.approx(json.loads((autoencoder / "config.json").read_text())
                                                      ["data"]["corrupted_psnr"], abs=1e-3)  # starts as identity
    assert training["best_score"] > training["initial_score"] + 2.0  # dB of PSNR on held-out patches
    model = Denoiser(autoencoder).model
    gen = torch.Generator().manual_seed(5)
    x = torch.linspace(0, 1, 48).view(1, 1, 1, 48).expand(2, 3, 48, 48).contiguous()  # a smooth ramp
    noisy = corrupt(x, "gaussian", 0.2, gen)
    with torch.no_grad():
        cleaned = model(noisy).clamp(0, 1)
    assert float((cleaned - x).pow(2).mean()) < 0.7 * float((noisy - x).pow(2).mean())


def test_resume_continues_from_the_saved_epoch_exactly(tmp_path: Path, sample_dir: Path) -> None:
    images = [str(p) for p in labelled_photos(sample_dir)[:12]]
    short = replace(TINY_AE, epochs=3, steps_per_epoch=5)
    straight = train_autoencoder(images, tmp_path / "straight", short)

    def interrupt_after_1(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise KeyboardInterrupt  # as if Ctrl-C came during epoch 2

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(images, tmp_path / "resumed", short, on_epoch=interrupt_after_1)
    seen: list[int] = []
    resumed = train_autoencoder(images, tmp_path / "resumed", short, resume=True,
                                on_epoch=lambda r: seen.append(r.epoch))
    assert seen == [2, 3]  # only the missing epochs ran
    assert [r.epoch for r in resumed.history] == [0, 1, 2, 3]
    assert [r.score for r in resumed.history] == pytest.approx([r.score for r in straight.history], abs=1e-6)
    for finished in (tmp_path / "straight", tmp_path / "resumed"):  # only the best weights and config remain
        assert sorted(p.name for p in finished.iterdir()) == [CONFIG_FILE, MODEL_FILE]
    res = runner.invoke(app, ["train", "autoencoder", str(sample_dir), "--out", str(tmp_path / "none"), "--resume"])
    assert res.exit_code == 2 and "nothing to resume" in one_error_line(res)


def test_keep_resume_leaves_a_finished_run_that_can_take_more_epochs(tmp_path: Path, sample_dir: Path) -> None:
    images = [str(p) for p in labelled_photos(sample_dir)[:12]]
    short = replace(TINY_AE, epochs=2, steps_per_epoch=3)
    train_autoencoder(images, tmp_path / "kept", short, keep_resume=True)
    assert (tmp_path / "kept" / RESUME_FILE).is_file() and (tmp_path / "kept" / LAST_FILE).is_file()
    seen: list[int] = []
    longer = train_autoencoder(images, tmp_path / "kept", replace(short, epochs=3), resume=True,
                               on_epoch=lambda r: seen.append(r.epoch))
    assert seen == [3] and longer.epochs == 3
    assert not (tmp_path / "kept" / RESUME_FILE).exists()  # this run did not ask to keep it
