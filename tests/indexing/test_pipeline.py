"""The indexing pipeline's device-side choices, exercised on the CPU.

The GPU paths (device selection, precision, out-of-memory back-off) are driven here by
simulating what a GPU would report; the real GPU is measured by scripts/bench_index.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval import RetrievalError
from retrieval.extractors import ExtractorConfig, create_extractor, resolve_device
from retrieval.options import resolve_precision
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


def test_indexing_survives_a_simulated_out_of_memory(make_engine, extractor, sample_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_embed = extractor.embed

    def small_device(p: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> np.ndarray:
        if len(p) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_embed(p, h, w)

    monkeypatch.setattr(extractor, "embed", small_device)
    monkeypatch.setattr(extractor, "max_batch", None)
    engine = make_engine(batch_size=16)
    report = engine.index([sample_dir])
    assert (report.added, report.failed) == (50, []) and len(engine) == 50


def test_device_and_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(RetrievalError, match="precision"):
        resolve_precision("int4", torch.device("cpu"))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(RetrievalError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_bf16_agrees_with_fp32_within_tolerance(extractor, sample_dir: Path) -> None:
    """The reduced-precision forward (the GPU default) stays close to float32."""
    half = create_extractor(ExtractorConfig(), "cpu", precision="bf16")
    pixels, hs, ws = _batch(extractor, sorted(sample_dir.rglob("*.jpg"))[::10])
    a, b = extractor.embed(pixels, hs, ws), half.embed(pixels, hs, ws)
    cosines = (a * b).sum(1)
    assert cosines.min() > 0.99, cosines
    assert a.dtype == b.dtype == np.float32


def test_pipelined_indexing_matches_a_plain_loop(make_engine, extractor, sample_dir: Path) -> None:
    """Workers, reduced-scale JPEG decoding and the writer thread against full-scale PIL
    decoding and one embed call (batched: one image per call costs minutes on a busy CPU)."""
    engine = make_engine(batch_size=8, workers=2)
    engine.index([sample_dir])
    paths = sorted(sample_dir.rglob("*.jpg"))
    rows = engine.catalog.rows_by_path(map(str, paths))
    stored = engine.vectors([rows[str(p)].id for p in paths])
    plain = extractor.embed_images([Image.open(p).convert("RGB") for p in paths])
    cosines = (stored * plain).sum(1)
    assert cosines.min() > 0.98, cosines.min()  # draft decoding resamples a little differently
    assert np.median(cosines) > 0.995
