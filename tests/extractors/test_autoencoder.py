"""The autoencoder's code as an extractor (retrieval/extractors/autoencoder.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.extractors import create_extractor, resolve_extractor
from retrieval.extractors.autoencoder import DenoisingAutoencoder
from retrieval.images.decode import load_image

from ..modelhelpers import TINY_AE, labelled_photos

pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see modelhelpers.single_thread


def test_autoencoder_code_is_an_extractor(autoencoder: Path, sample_dir: Path) -> None:
    ae = create_extractor(resolve_extractor(autoencoder), "cpu")
    assert ae.manifest.config.kind == "autoencoder" and ae.dim == TINY_AE.width * 2 ** (TINY_AE.levels - 1)
    vecs = ae.embed_images([load_image(p).image for p in labelled_photos(sample_dir)[:3]])
    assert vecs.shape == (3, ae.dim) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    shape = DenoisingAutoencoder(8, 2)(torch.rand(1, 3, 37, 50)).shape  # any size, padded inside
    assert shape == (1, 3, 37, 50)
