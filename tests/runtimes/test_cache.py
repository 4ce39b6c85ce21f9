"""The graph cache: exported on first use, reused after, exported again when anything that
decides the graph changes or the cached file is damaged; never half-written."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

import retrieval.runtimes.graph as graph_export
from retrieval.extractors import Extractor, ExtractorConfig, create_extractor
from retrieval.runtimes import create_runtime_extractor, ExportFailedError
from retrieval.runtimes.cache import OPSET, cache_root, graph_key
from retrieval.runtimes.session import GraphExtractor

from .conftest import MIN_COSINE, lowest_cosine

CONFIG = ExtractorConfig(image_size=96)


@pytest.fixture()
def exports(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the exports made (each records the canvas size it exported)."""
    made: list[int] = []
    real = graph_export.export_descriptor  # imported from there when an export is needed

    def counting(extractor: Extractor, path: Path, opset: int) -> None:
        made.append(extractor.manifest.config.image_size)
        real(extractor, path, opset)

    monkeypatch.setattr(graph_export, "export_descriptor", counting)
    return made


def graph_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "graphs").iterdir())


def test_cache_lives_where_the_environment_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RETRIEVE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "retrieve"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "retrieve"


def test_exported_once_then_reused(fresh_cache: Path, exports: list[int], photos: list[Image.Image]) -> None:
    first = create_runtime_extractor(CONFIG, "cpu", runtime="onnx")
    again = create_runtime_extractor(CONFIG, "cpu", runtime="onnx")
    assert exports == [96]
    assert isinstance(again, GraphExtractor) and again.graph == first.graph
    files = graph_files(fresh_cache)
    assert files == sorted([first.graph.name, first.graph.with_suffix(".json").name])  # no temporary file left
    sidecar = json.loads(first.graph.with_suffix(".json").read_text())
    assert sidecar["manifest"] == first.manifest.to_dict() and sidecar["opset"] == OPSET


def test_a_changed_key_part_exports_again(fresh_cache: Path, exports: list[int]) -> None:
    create_runtime_extractor(CONFIG, "cpu", runtime="onnx")
    create_runtime_extractor(replace(CONFIG, image_size=128), "cpu", runtime="onnx")
    create_runtime_extractor(ExtractorConfig(image_size=96, pooling="avg"), "cpu", runtime="onnx")
    assert exports == [96, 128, 96]
    assert len(graph_files(fresh_cache)) == 6


def test_key_covers_weights_size_pooling_and_opset(extractor: Extractor) -> None:
    identity = extractor.manifest.identity()
    key = graph_key("descriptor", identity)
    changed = [
        {**identity, "weights_digest": "0" * 32},
        {**identity, "config": {**identity["config"], "image_size": 320}},
        {**identity, "config": {**identity["config"], "pooling": "avg", "pooling_params": {}}},
        {**identity, "config": {**identity["config"], "pooling_params": {"p": 4.0}}},
    ]
    assert len({key, *(graph_key("descriptor", c) for c in changed), graph_key("descriptor", identity, OPSET + 1)}) == 6
    moved = replace(extractor.manifest, config=replace(extractor.manifest.config, weights="/elsewhere/same.pth"))
    assert graph_key("descriptor", moved.identity()) == key  # a weights file that moved is the same graph


@pytest.mark.parametrize("damage", ["truncate", "garbage-with-checksum"])
def test_damaged_graph_is_exported_again(damage: str, fresh_cache: Path, exports: list[int],
                                         photos: list[Image.Image], caplog: pytest.LogCaptureFixture) -> None:
    reference = create_extractor(CONFIG, "cpu")
    graph = create_runtime_extractor(CONFIG, "cpu", runtime="onnx")
    assert isinstance(graph, GraphExtractor)
    data = graph.graph.read_bytes()
    if damage == "truncate":
        graph.graph.write_bytes(data[: len(data) // 2])
    else:  # bytes that pass the checksum but are no graph: the runtime's refusal triggers the export
        graph.graph.write_bytes(b"not a graph")
        import hashlib
        sidecar = graph.graph.with_suffix(".json")
        info = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**info, "sha256": hashlib.sha256(b"not a graph").hexdigest()}))
    with caplog.at_level(logging.WARNING, logger="retrieval.runtimes"):
        rebuilt = create_runtime_extractor(CONFIG, "cpu", runtime="onnx")
    assert exports == [96, 96]
    assert "exporting it again" in caplog.text
    assert lowest_cosine(reference, rebuilt, photos) >= MIN_COSINE


def test_failed_export_is_one_line(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Exporting the operator 'aten::made_up' to ONNX opset version 18 is not supported.\nmore")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportFailedError, match=r"^cannot export the bottleneck extractor to ONNX: .*made_up.*$") as e:
        create_runtime_extractor(CONFIG, "cpu", runtime="onnx")
    assert "\n" not in str(e.value)
    assert not (fresh_cache / "graphs").exists() or graph_files(fresh_cache) == []  # nothing half-written


def test_unwritable_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder that cannot be made: auto runs PyTorch, an explicit runtime says why in one line."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RETRIEVE_CACHE_DIR", str(blocker / "cache"))
    from retrieval.extractors.bottleneck import BottleneckExtractor

    assert isinstance(create_runtime_extractor(CONFIG, "cpu", runtime="auto"), BottleneckExtractor)
    with pytest.raises(ExportFailedError, match=r"^cannot write the graph cache .*a-file/cache/graphs: .*RETRIEVE_CACHE_DIR"):
        create_runtime_extractor(CONFIG, "cpu", runtime="onnx")
