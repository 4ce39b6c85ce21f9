"""bfloat16 on the CPU (--precision bf16): OpenVINO's graph where installed, PyTorch's
autocast otherwise, only where the CPU runs it natively; recorded in the manifest, so an
index keeps making its vectors that way and float32 vectors are never mixed in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval import Engine
from retrieval.errors import ExtractorMismatchError
from retrieval.extractors import ExtractorConfig
from retrieval.extractors.bottleneck import BottleneckExtractor
from retrieval.options import EngineOptions
from retrieval.runtimes import RuntimeUnsupportedError, create_runtime_extractor
from retrieval.runtimes import openvino_runtime
from retrieval.runtimes.session import GraphExtractor, installed

from ..conftest import SAMPLE

CONFIG = ExtractorConfig(image_size=128)
NATIVE = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
needs_native = pytest.mark.skipif(not NATIVE, reason="this CPU has no native bfloat16")
needs_openvino = pytest.mark.skipif(not installed("openvino"), reason="OpenVINO (the openvino extra) is missing")


def _photos() -> list[str]:
    return [str(p) for p in sorted((SAMPLE / "cup").iterdir())] + [str(p) for p in sorted((SAMPLE / "chair").iterdir())]


@needs_native
@needs_openvino
def test_auto_runs_bf16_in_openvino_and_records_it(tmp_path: Path) -> None:
    half = create_runtime_extractor(CONFIG, "cpu", "bf16", runtime="auto")
    full = create_runtime_extractor(CONFIG, "cpu", "fp32", runtime="torch")
    assert isinstance(half, GraphExtractor) and half.runtime == "openvino"
    assert half.manifest.precision == "bf16" and full.manifest.precision == "fp32"
    a, b = half.embed_images(_load(_photos())), full.embed_images(_load(_photos()))
    cosines = np.sum(a * b, axis=1)
    assert cosines.min() > 0.99 and cosines.min() < 0.99999  # close, and not the float32 vector


@needs_native
def test_pytorch_runs_bf16_where_openvino_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("retrieval.runtimes.session.installed", lambda name: False)
    built = create_runtime_extractor(CONFIG, "cpu", "bf16", runtime="auto")
    assert isinstance(built, BottleneckExtractor) and built.manifest.precision == "bf16"


def test_emulated_bf16_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(openvino_runtime, "native_bf16", lambda: False)
    for runtime in ("auto", "torch", *(["openvino"] if installed("openvino") else [])):
        with pytest.raises(RuntimeUnsupportedError, match="no native bfloat16"):
            create_runtime_extractor(CONFIG, "cpu", "bf16", runtime=runtime)
    with pytest.raises(RuntimeUnsupportedError, match="fp16 runs on a GPU only"):
        create_runtime_extractor(CONFIG, "cpu", "fp16", runtime="auto")


@needs_native
def test_a_bf16_index_keeps_making_bf16_vectors_and_refuses_float32(tmp_path: Path) -> None:
    outside = str(sorted((SAMPLE / "cup").iterdir())[0])
    options = EngineOptions(device="cpu", precision="bf16", workers=0)
    with Engine.create(tmp_path / "idx", CONFIG, options=options) as engine:
        engine.index([str(p) for p in sorted((SAMPLE / "cup").iterdir())[1:]])
        assert engine.manifest.precision == "bf16"
    with Engine.open(tmp_path / "idx", options=EngineOptions(device="cpu", workers=0)) as engine:  # auto
        engine.index([str(SAMPLE / "chair")])  # the index's own precision, with no flag
        assert engine.extractor.manifest.precision == "bf16"
        hits = engine.search(outside, k=3)  # embedded now, in bf16
        assert hits and Path(hits[0].path).parent == SAMPLE / "cup"
    with Engine.open(tmp_path / "idx", options=EngineOptions(device="cpu", precision="fp32", workers=0)) as engine:
        with pytest.raises(ExtractorMismatchError, match="precision"):  # float32 asked for, by name
            engine.search(outside, k=3)


def _load(paths: list[str]) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in paths]
