"""--runtime auto: PyTorch where the graph runtimes do not apply; on the CPU the fastest
runtime whose vectors agree, measured once and remembered; clear errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import retrieval.runtimes.choice as choice
import retrieval.runtimes.session as session
from retrieval.errors import UnknownNameError
from retrieval.extractors import ExtractorConfig
from retrieval.extractors.bottleneck import BottleneckExtractor
from retrieval.options import EngineOptions
from retrieval.runtimes import create_runtime_extractor, RuntimeUnavailableError, RuntimeUnsupportedError
from retrieval.runtimes.session import GraphExtractor

from .conftest import MIN_COSINE, RUNTIME_NAMES

CONFIG = ExtractorConfig(image_size=96)


def test_fastest_agreeing_runtime_wins() -> None:
    measured = {"torch": {"images_per_s": 10.0, "min_cosine": 1.0},
                "onnx": {"images_per_s": 30.0, "min_cosine": 0.99999},
                "openvino": {"images_per_s": 60.0, "min_cosine": 0.9967}}  # bf16-like: fast, but not the same vectors
    assert choice.fastest_agreeing(measured) == "onnx"
    measured["onnx"]["min_cosine"] = 0.99
    assert choice.fastest_agreeing(measured) == "torch"


def test_auto_measures_once_then_remembers(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = create_runtime_extractor(CONFIG, "cpu", runtime="auto")
    record = json.loads((fresh_cache / "runtime-choice.json").read_text())
    (decision,) = record.values()
    measured = decision["measured"]
    assert set(measured) == {"torch", *RUNTIME_NAMES}
    assert decision["runtime"] == choice.fastest_agreeing(measured)
    assert measured[decision["runtime"]]["min_cosine"] >= MIN_COSINE
    assert (first.runtime if isinstance(first, GraphExtractor) else "torch") == decision["runtime"]

    def no_measuring(*args: object) -> None:
        raise AssertionError("measured again")

    monkeypatch.setattr(choice, "measure", no_measuring)
    again = create_runtime_extractor(CONFIG, "cpu", runtime="auto", known=first.manifest)
    assert type(again) is type(first) and again.manifest == first.manifest


def test_remembered_choice_loads_without_building_pytorch(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cold start of a query: a known manifest and a remembered choice load the cached
    graph directly (the PyTorch model is not built)."""
    monkeypatch.setattr(choice, "fastest_agreeing", lambda measured: "onnx")
    manifest = create_runtime_extractor(CONFIG, "cpu", runtime="auto").manifest

    def no_pytorch(*args: object) -> None:
        raise AssertionError("the PyTorch model was built")

    monkeypatch.setattr(BottleneckExtractor, "__init__", no_pytorch)
    warm = create_runtime_extractor(CONFIG, "cpu", runtime="auto", known=manifest)
    assert isinstance(warm, GraphExtractor) and warm.runtime == "onnx"
    explicit = create_runtime_extractor(CONFIG, "cpu", runtime="onnx", known=manifest)
    assert isinstance(explicit, GraphExtractor)


def test_reduced_precision_is_not_measured_against_float32(fresh_cache: Path) -> None:
    """bf16 is a choice with its own runtime rule (tests/runtimes/test_bf16.py), never the
    float32 measurement: its vectors would fail the agreement that measurement requires."""
    try:
        built = create_runtime_extractor(CONFIG, "cpu", "bf16", runtime="auto")
    except RuntimeUnsupportedError:  # a CPU without native bfloat16
        built = None
    assert built is None or built.manifest.precision == "bf16"
    assert not (fresh_cache / "runtime-choice.json").exists()


def test_auto_without_graph_runtimes_is_pytorch(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "installed", lambda name: False)
    monkeypatch.setattr(choice, "installed", lambda name: False)
    assert isinstance(create_runtime_extractor(CONFIG, "cpu", runtime="auto"), BottleneckExtractor)
    with pytest.raises(RuntimeUnavailableError, match="runtime openvino is not installed"):
        create_runtime_extractor(CONFIG, "cpu", runtime="openvino")


def test_auto_falls_back_when_the_export_fails(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import torch

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    assert isinstance(create_runtime_extractor(CONFIG, "cpu", runtime="auto"), BottleneckExtractor)
    assert "left out" in caplog.text
    (decision,) = json.loads((fresh_cache / "runtime-choice.json").read_text()).values()
    assert decision["runtime"] == "torch"  # remembered: the export is not retried at every start


def test_explicit_runtime_needs_the_cpu_in_float32() -> None:
    with pytest.raises(RuntimeUnsupportedError, match="^runtime onnx runs float32 on the CPU only"):
        create_runtime_extractor(CONFIG, "cpu", "bf16", runtime="onnx")


def test_unknown_runtime_is_refused_early() -> None:
    with pytest.raises(UnknownNameError, match="unknown runtime 'tensorrt'; choose auto, torch, onnx, openvino"):
        EngineOptions(runtime="tensorrt")
