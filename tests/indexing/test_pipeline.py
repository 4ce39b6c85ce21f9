"""The indexing pipeline, exercised on the CPU: a simulated out-of-memory on the device
does not stop a run, and the pipelined path (workers, reduced-scale JPEG decoding, the
writer thread) stores the vectors a plain loop computes.
"""

from __future__ import annotations

import time
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


def test_the_report_says_where_the_time_went(make_engine, extractor, sample_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stage is timed where it happens: a model made slower shows in "model", a slower
    writer in "writing", and the stages fit inside the run's wall time."""
    real_embed = extractor.embed

    def slow_model(p: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> np.ndarray:
        time.sleep(0.2)
        return real_embed(p, h, w)

    monkeypatch.setattr(extractor, "embed", slow_model)
    engine = make_engine(batch_size=10, workers=0)
    real_apply = engine.catalog.apply

    def slow_apply(*args, **kwargs):
        time.sleep(0.1)
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(engine.catalog, "apply", slow_apply)
    report = engine.index([sample_dir])
    stages = report.stages
    assert list(stages) == ["planning", "waiting_for_decoding", "model", "waiting_for_the_writer", "writing",
                            "saving"]
    assert all(v >= 0 for v in stages.values())
    assert stages["model"] >= 5 * 0.2  # five batches of ten
    assert stages["writing"] >= 5 * 0.1
    serial = stages["planning"] + stages["waiting_for_decoding"] + stages["model"] + \
        stages["waiting_for_the_writer"] + stages["saving"]
    assert serial <= report.seconds * 1.01 + 0.01
    assert report.to_dict()["stages"]["model"] == round(stages["model"], 3)
    assert "model" in report.where_the_time_went()
