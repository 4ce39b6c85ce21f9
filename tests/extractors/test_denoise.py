"""--denoise: a trained autoencoder cleans images before the extractor embeds them, at the
stage the Engine's options name (query, index or both)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval import Engine
from retrieval.cli.app import app
from retrieval.extractors import ExtractorConfig, create_extractor
from retrieval.extractors.denoise import Denoiser, DenoisingExtractor
from retrieval.images.decode import load_image
from retrieval.options import EngineOptions
from retrieval.training.corruptions import corrupt_image

from ..cli.conftest import one_error_line
from ..modelhelpers import labelled_photos

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see modelhelpers.single_thread


def test_denoise_moves_noisy_embeddings_towards_the_clean_ones(autoencoder: Path, sample_dir: Path,
                                                               tmp_path: Path) -> None:
    extractor = create_extractor(ExtractorConfig(image_size=64), "cpu")
    denoising = DenoisingExtractor(extractor, Denoiser(autoencoder))
    clean = [load_image(p).image.resize((64, 48)) for p in labelled_photos(sample_dir)[::5]]
    noisy = [corrupt_image(im, "gaussian", 0.2, seed=i) for i, im in enumerate(clean)]
    c, n, d = extractor.embed_images(clean), extractor.embed_images(noisy), denoising.embed_images(noisy)
    assert float((d * c).sum(1).mean()) > float((n * c).sum(1).mean()) + 0.01

    with Engine.create(tmp_path / "b", extractor, options=EngineOptions(device="cpu", workers=0, denoise=autoencoder,
                                                                          denoise_at="query")) as engine:
        assert engine.embedder("index") is extractor
        np.testing.assert_allclose(engine.embed(noisy[0]), d[0], atol=1e-5)
        engine.add([str(p) for p in labelled_photos(sample_dir)[:5]])
        res = runner.invoke(app, ["query", str(labelled_photos(sample_dir)[7]), "-i", str(engine.path), "--denoise",
                                  str(autoencoder), "--json", "-k", "2"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["query", str(labelled_photos(sample_dir)[7]), "-i", str(engine.path), "--denoise",
                              str(tmp_path / "b")])
    assert res.exit_code == 2 and "no trained checkpoint" in one_error_line(res)
