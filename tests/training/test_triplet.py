"""Triplet fine-tuning learns what the labels mean, and its checkpoint embeds as
validation measured (toy sizes: 96 px canvases, a few epochs on the sample photos)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import ImageDraw

from retrieval.errors import RetrievalError
from retrieval.evaluation.labels import read_labelled
from retrieval.evaluation.metrics import evaluate
from retrieval.extractors import create_extractor, resolve_extractor
from retrieval.images.decode import load_image
from retrieval.training.triplet import TripletSettings, train_triplet

from ..modelhelpers import labelled_photos

pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see modelhelpers.single_thread


@pytest.fixture()
def red_or_blue(tmp_path: Path, sample_dir: Path) -> Path:
    """Two classes the off-the-shelf model cannot tell apart: every photo appears in both,
    once with a red and once with a blue square in its corner. Its nearest neighbour is
    its own twin of the other class; a model trained on the labels must learn the colour."""
    root = tmp_path / "red-or-blue"
    for i, path in enumerate(labelled_photos(sample_dir)):
        image = load_image(path).image
        image.thumbnail((120, 120))
        for name, colour in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
            marked = image.copy()
            side = min(marked.size) // 2
            ImageDraw.Draw(marked).rectangle([0, 0, side, side], fill=colour)
            (root / name).mkdir(parents=True, exist_ok=True)
            marked.save(root / name / f"{i:02d}.png")
    return root


def test_triplet_training_learns_what_the_labels_mean(red_or_blue: Path, tmp_path: Path) -> None:
    settings = TripletSettings(epochs=4, image_size=96, embed_size=96, cache_views=2, val_fraction=0.2,
                               classes_per_batch=2, per_class=8, lr=1e-3, head_lr=1e-3, workers=0, device="cpu")
    epochs_seen: list[int] = []
    result = train_triplet(red_or_blue, tmp_path / "t", settings, keep_resume=True,  # for the resume below
                           on_epoch=lambda r: epochs_seen.append(r.epoch))
    assert epochs_seen == [0, 1, 2, 3, 4] and [r.epoch for r in result.history] == epochs_seen
    assert result.initial_score < 0.65  # about chance: the twins rank first
    assert result.best_score > result.initial_score + 0.1 and result.best_epoch > 0

    # the checkpoint embeds the held-out images as validation saw them
    _, val = read_labelled(red_or_blue).split(settings.val_fraction, settings.seed)
    pictures = [load_image(p).image for p in val.paths]
    ids = list(range(len(pictures)))
    trained = create_extractor(resolve_extractor(tmp_path / "t"), "cpu").embed_images(pictures)
    assert evaluate(trained, val.labels, trained, val.labels, query_ids=ids, gallery_ids=ids).map == \
        pytest.approx(result.best_score, abs=0.02)

    saved = json.loads((tmp_path / "t" / "config.json").read_text())
    assert saved["training"]["epochs"] == 4 and saved["training"]["settings"]["mining"] == "semihard"
    with pytest.raises(RetrievalError, match="already holds a checkpoint"):
        train_triplet(red_or_blue, tmp_path / "t", settings)
    with pytest.raises(RetrievalError, match="other settings"):
        train_triplet(red_or_blue, tmp_path / "t", replace(settings, margin=0.3), resume=True)
