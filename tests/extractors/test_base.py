"""The extractor's device-side choices (retrieval/extractors/base.py), exercised on the CPU:
out-of-memory back-off, simulated as a GPU would report it, and the reduced-precision
forward pass of the GPU default against float32. The real GPU is measured by
scripts/bench_index.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval import RetrievalError
from retrieval.extractors import ExtractorConfig, create_extractor
from retrieval.images.decode import load_image


def _batch(extractor, paths: list[Path]):
    prepared = [extractor.preprocessor(load_image(p).image) for p in paths]
    return (torch.from_numpy(np.stack([p[0] for p in prepared])),
            torch.tensor([p[1] for p in prepared]), torch.tensor([p[2] for p in prepared]))


def test_out_of_memory_halves_the_batch_and_keeps_going(extractor, sample_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pixels, hs, ws = _batch(extractor, sorted(sample_dir.rglob("*.jpg"))[:7])
    expected = extractor.embed(pixels, hs, ws)
    real_embed = extractor.embed
    sizes: list[int] = []

    def small_device(p: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> np.ndarray:
        sizes.append(len(p))
        if len(p) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_embed(p, h, w)

    monkeypatch.setattr(extractor, "embed", small_device)
    monkeypatch.setattr(extractor, "max_batch", None)
    got = extractor.embed_adaptive(pixels, hs, ws)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # 7 fails, halved to 3 fails (over 2), halved to 1: the seven images one by one.
    assert sizes == [7, 3, 1, 1, 1, 1, 1, 1, 1]
    assert extractor.max_batch == 1
    sizes.clear()
    extractor.embed_adaptive(pixels, hs, ws)  # the lowered size is remembered: no failed attempt
    assert sizes == [1] * 7


def test_out_of_memory_for_one_image_is_a_clear_error(extractor, sample_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pixels, hs, ws = _batch(extractor, sorted(sample_dir.rglob("*.jpg"))[:2])

    def no_memory(*a: object) -> np.ndarray:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(extractor, "embed", no_memory)
    monkeypatch.setattr(extractor, "max_batch", None)
    with pytest.raises(RetrievalError, match="even for one image"):
        extractor.embed_adaptive(pixels, hs, ws)


def test_bf16_agrees_with_fp32_within_tolerance(extractor, sample_dir: Path) -> None:
    """The reduced-precision forward (the GPU default) stays close to float32."""
    half = create_extractor(ExtractorConfig(), "cpu", precision="bf16")
    pixels, hs, ws = _batch(extractor, sorted(sample_dir.rglob("*.jpg"))[::10])
    a, b = extractor.embed(pixels, hs, ws), half.embed(pixels, hs, ws)
    cosines = (a * b).sum(1)
    assert cosines.min() > 0.99, cosines
    assert a.dtype == b.dtype == np.float32
