"""Runtimes through the Engine and the command line: an index built with one runtime is
searched and extended with another, its manifest untouched; `retrieve export` writes a
graph that another program runs to the engine's vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval import Engine
from retrieval.catalog import Catalog
from retrieval.opening import CATALOG_FILE
from retrieval.options import EngineOptions
from retrieval.runtimes.graphs import descriptor_graph
from retrieval.runtimes.session import GraphExtractor

from ..cli.conftest import invoke
from ..conftest import SAMPLE
from .conftest import MIN_COSINE, RUNTIME_NAMES

EXTRACTOR = {"image_size": 128}


def options(runtime: str) -> EngineOptions:
    return EngineOptions(device="cpu", runtime=runtime, workers=0)


def stored_manifest(bundle: Path) -> str:
    catalog = Catalog(bundle / CATALOG_FILE)
    try:
        return json.dumps(catalog.get_json("manifest"), sort_keys=True)
    finally:
        catalog.close()


@pytest.fixture()
def torch_bundle(tmp_path: Path) -> Path:
    """Cups and chairs indexed with PyTorch."""
    with Engine.create(tmp_path / "bundle", EXTRACTOR, options=options("torch")) as engine:
        engine.index([SAMPLE / "cup", SAMPLE / "chair"])
    return tmp_path / "bundle"


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
def test_index_built_with_pytorch_searched_and_extended_with_a_runtime(runtime: str, torch_bundle: Path,
                                                                       tmp_path: Path) -> None:
    before = stored_manifest(torch_bundle)
    dolphins = sorted((SAMPLE / "dolphin").glob("*.jpg"))
    with Engine.open(torch_bundle, options=options("torch")) as engine:
        expected = engine.search(str(dolphins[0]), k=10)
    with Engine.open(torch_bundle, options=options(runtime)) as engine:
        assert isinstance(engine.extractor, GraphExtractor) and engine.extractor.runtime == runtime
        got = engine.search(str(dolphins[0]), k=10)
        engine.add(dolphins[1:])  # embedded by the runtime
        stored = engine.vectors([engine.catalog.resolve_ids([str(p)], strict=True).pop() for p in dolphins[1:]])
    assert [h.id for h in got] == [h.id for h in expected]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], atol=1e-4)
    assert stored_manifest(torch_bundle) == before
    with Engine.create(tmp_path / "by-torch", EXTRACTOR, options=options("torch")) as engine:
        engine.add(dolphins[1:])  # the same files through the same pipeline, embedded by PyTorch
        fresh = engine.vectors([engine.catalog.resolve_ids([str(p)], strict=True).pop() for p in dolphins[1:]])
    assert float((stored * fresh).sum(1).min()) >= MIN_COSINE


def test_query_command_takes_runtime(torch_bundle: Path) -> None:
    query = str(sorted((SAMPLE / "cup").glob("*.jpg"))[0])
    results = {}
    for runtime in ("torch", *RUNTIME_NAMES):
        out = invoke("query", query, "-i", str(torch_bundle), "--runtime", runtime, "--json")
        assert out.exit_code == 0, out.output
        results[runtime] = json.loads(out.stdout)["results"]
    ranks = {runtime: [r["id"] for r in hits] for runtime, hits in results.items()}
    assert all(ids == ranks["torch"] for ids in ranks.values())
    bad = invoke("query", query, "-i", str(torch_bundle), "--runtime", "tensorrt")
    assert bad.exit_code == 2 and bad.stderr.strip() == \
        "error: unknown runtime 'tensorrt'; choose auto, torch, onnx, openvino"


def run_graph(path: Path, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
    """The exported file in a fresh ONNX Runtime session, as another program would run it."""
    import onnxruntime

    fresh = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return fresh.run(["vectors"], {"pixels": pixels.numpy(), "heights": heights.numpy(), "widths": widths.numpy()})[0]


def canvases(extractor_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sample's cups as canvases, made as the sidecar documents (letterboxed, bicubic)."""
    from retrieval.images.preprocess import Preprocessor

    paths = sorted((SAMPLE / "cup").glob("*.jpg"))
    prepared = [Preprocessor(extractor_size, "letterbox", "bicubic")(Image.open(p).convert("RGB")) for p in paths]
    return (torch.from_numpy(np.stack([p[0] for p in prepared])), torch.tensor([p[1] for p in prepared]),
            torch.tensor([p[2] for p in prepared]))


def test_export_of_an_index_gives_its_vectors(torch_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported" / "model.onnx"
    result = invoke("export", str(torch_bundle), "--format", "onnx", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert json.dumps(sidecar["manifest"], sort_keys=True) == stored_manifest(torch_bundle)
    assert set(sidecar["io"]) == {"pixels", "heights", "widths", "vectors"}
    pixels, heights, widths = canvases(sidecar["manifest"]["config"]["image_size"])
    with Engine.open(torch_bundle, options=options("torch")) as engine:
        expected = engine.extractor.embed(pixels, heights, widths)
    got = run_graph(out, pixels, heights, widths)
    assert got.dtype == np.float32 and float((got * expected).sum(1).min()) >= MIN_COSINE


def test_export_of_a_backbone_name(tmp_path: Path, extractor) -> None:
    out = tmp_path / "lite0.onnx"
    result = invoke("export", "tf_efficientnet_lite0", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".json").read_text())["manifest"] == extractor.manifest.to_dict()
    pixels, heights, widths = canvases(extractor.manifest.config.image_size)
    expected = extractor.embed(pixels, heights, widths)
    assert float((run_graph(out, pixels, heights, widths) * expected).sum(1).min()) >= MIN_COSINE


@pytest.mark.parametrize(("args", "message"), [
    (["tf_efficientnet_lite0", "--format", "tflite"], "error: unknown export format 'tflite'; choose onnx"),
    (["no_such_net"], "error: extractor 'no_such_net' is neither a backbone"),
])
def test_export_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke("export", *args, "--out", str(tmp_path / "x.onnx"))
    assert result.exit_code == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("command", [["index", str(SAMPLE / "cup")], ["eval", str(SAMPLE)]])
def test_index_and_eval_take_runtime(command: list[str], tmp_path: Path) -> None:
    """The option reaches EngineOptions, which refuses an unknown runtime before any work."""
    result = invoke(*command, "-i", str(tmp_path / "bundle"), "--runtime", "tensorrt")
    assert result.exit_code == 2 and result.stderr == "error: unknown runtime 'tensorrt'; choose auto, torch, onnx, openvino\n"
    assert not (tmp_path / "bundle").exists()


def test_index_command_extends_with_a_runtime(torch_bundle: Path, fresh_cache: Path) -> None:
    """`retrieve index --runtime onnx` on an index PyTorch built exports the graph and embeds
    with it; the new images' vectors are PyTorch's (same files, same pipeline)."""
    dolphins = sorted((SAMPLE / "dolphin").glob("*.jpg"))
    result = invoke("index", str(SAMPLE / "dolphin"), "-i", str(torch_bundle), "--runtime", "onnx", "-q", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == len(dolphins)
    with Engine.open(torch_bundle) as engine:
        assert descriptor_graph(engine.manifest).valid()  # exported into this test's empty cache: it ran
        stored = engine.vectors([engine.catalog.resolve_ids([str(p)], strict=True).pop() for p in dolphins])
    with Engine.create(torch_bundle.parent / "by-torch", EXTRACTOR, options=options("torch")) as engine:
        engine.add(dolphins)
        fresh = engine.vectors([engine.catalog.resolve_ids([str(p)], strict=True).pop() for p in dolphins])
    assert float((stored * fresh).sum(1).min()) >= MIN_COSINE
