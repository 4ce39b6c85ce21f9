"""A `retrieve train` checkpoint is an extractor: it embeds exactly as the trained
network does, and keeps its identity when its folder moves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.extractors import create_extractor, resolve_extractor
from retrieval.extractors.checkpoint import MODEL_FILE
from retrieval.extractors.triplet import build_triplet_net
from retrieval.images.decode import load_image

from ..modelhelpers import labelled_photos

pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see modelhelpers.single_thread


def test_checkpoint_round_trip_gives_identical_embeddings(triplet_checkpoints: tuple[Path, Path],
                                                          tmp_path: Path, sample_dir: Path) -> None:
    a, _ = triplet_checkpoints
    model = json.loads((a / "config.json").read_text())["model"]
    net, _ = build_triplet_net(model, 96)
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(a / MODEL_FILE)))
    extractor = create_extractor(resolve_extractor(a), "cpu")
    images = [load_image(p).image for p in labelled_photos(sample_dir)[:4]]
    prepared = [extractor.preprocessor(im) for im in images]
    pixels = torch.from_numpy(np.stack([p[0] for p in prepared]))
    hs, ws = torch.tensor([p[1] for p in prepared]), torch.tensor([p[2] for p in prepared])
    with torch.no_grad():
        direct = net.eval()(pixels, hs, ws).numpy()
    np.testing.assert_array_equal(extractor.embed_images(images), direct)
    assert extractor.dim == 64 and extractor.manifest.config.kind == "triplet"

    moved = shutil.copytree(a, tmp_path / "moved")  # same weights elsewhere: same identity
    again = create_extractor(resolve_extractor(moved / MODEL_FILE), "cpu")
    assert again.manifest.identity() == extractor.manifest.identity()
    np.testing.assert_array_equal(again.embed_images(images), direct)
