"""The indexing pipeline, exercised on the CPU: a simulated out-of-memory on the device
does not stop a run, and the pipelined path (workers, reduced-scale JPEG decoding, the
writer thread) stores the vectors a plain loop computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


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
