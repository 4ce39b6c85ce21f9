"""int8 on the CPU (precision "int8"): the descriptor graph quantised on the user's own
images and run by OpenVINO, recorded in the manifest with its calibration, so that an
index keeps making its vectors with the very same graph and never mixes in float32 ones.
An int8 index is created from an int8 extractor (``Engine.create(path, extractor)``); every
later opening finds its graph from the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval import Engine
from retrieval.errors import ExtractorMismatchError, RetrievalError
from retrieval.extractors import ExtractorConfig, create_extractor
from retrieval.options import EngineOptions
from retrieval.runtimes import RuntimeUnavailableError, RuntimeUnsupportedError, create_runtime_extractor
from retrieval.runtimes.graphs import descriptor_graph
from retrieval.runtimes.quantize import BUNDLE_GRAPH, CALIBRATION_KEY, Calibration, float_manifest, quantized_graph
from retrieval.runtimes.session import GraphExtractor, installed

from ..conftest import SAMPLE
from .conftest import lowest_cosine

CONFIG = ExtractorConfig(image_size=128)
# Measured on the 10 photos (one a class) at 128 px, calibrated on all 30 sample photos: lowest
# cosine 0.982, mean 0.992 (Caltech-101 at 288 px, 2,893 photos: lowest 0.948, mean 0.990).
MIN_INT8_COSINE = 0.97
pytestmark = pytest.mark.skipif(not installed("openvino"), reason="OpenVINO (the openvino extra) is missing")


def _sample() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(SAMPLE.glob("*/*.jpg"))]


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    """All sample photos through the extractor's own preprocessing."""
    return Calibration.of(create_extractor(CONFIG, "cpu", "fp32").manifest.preprocessor(), _sample())


def test_int8_records_its_calibration_and_agrees_with_float32(calibration: Calibration,
                                                                photos: list[Image.Image]) -> None:
    int8 = create_runtime_extractor(CONFIG, "cpu", "int8", runtime="auto", calibration=calibration)
    full = create_runtime_extractor(CONFIG, "cpu", "fp32", runtime="torch")
    assert isinstance(int8, GraphExtractor) and int8.runtime == "openvino"
    assert int8.manifest.precision == "int8" and int8.manifest.extra[CALIBRATION_KEY] == calibration.digest()
    full.manifest.check_compatible(float_manifest(int8.manifest))  # the same extractor, but for precision
    cosine = lowest_cosine(full, int8, photos)
    assert MIN_INT8_COSINE <= cosine < 0.99999  # close, and not the float32 vector


def test_a_near_duplicate_still_finds_its_photo(calibration: Calibration) -> None:
    int8 = create_runtime_extractor(CONFIG, "cpu", "int8", runtime="openvino", calibration=calibration)
    photos = _sample()
    gallery = int8.embed_images(photos)
    edited = [p.crop((p.width // 20, p.height // 20, p.width - p.width // 20, p.height - p.height // 20))
              .resize((p.width * 3 // 4, p.height * 3 // 4)) for p in photos]  # cropped 5% a side, shrunk
    top1 = (int8.embed_images(edited) @ gallery.T).argmax(1)
    np.testing.assert_array_equal(top1, np.arange(len(photos)))


def test_an_int8_manifest_finds_its_graph_and_refuses_float32(calibration: Calibration, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                photos: list[Image.Image]) -> None:
    built = create_runtime_extractor(CONFIG, "cpu", "int8", runtime="auto", calibration=calibration)
    again = create_runtime_extractor(CONFIG, "cpu", "auto", runtime="auto", known=built.manifest)  # an index's
    assert isinstance(built, GraphExtractor) and isinstance(again, GraphExtractor) and again.graph == built.graph and again.manifest == built.manifest
    np.testing.assert_array_equal(again.embed_images(photos), built.embed_images(photos))
    float32 = create_runtime_extractor(CONFIG, "cpu", "fp32", runtime="onnx", known=built.manifest)
    with pytest.raises(ExtractorMismatchError, match="precision"):  # what an Engine checks on opening
        built.manifest.check_compatible(float32.manifest)
    with pytest.raises(ExtractorMismatchError, match="precision"):  # and int8 asked of a float32 index
        float32.manifest.check_compatible(built.manifest)
    monkeypatch.setenv("RETRIEVE_CACHE_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(RetrievalError, match="neither in this machine's cache nor in the index folder"):
        create_runtime_extractor(CONFIG, "cpu", "auto", runtime="auto", known=built.manifest)


def test_an_int8_index_keeps_making_int8_vectors_and_refuses_float32(calibration: Calibration,
                                                                       tmp_path: Path) -> None:
    int8 = create_runtime_extractor(CONFIG, "cpu", "int8", runtime="auto", calibration=calibration)
    cups = sorted((SAMPLE / "cup").iterdir())
    with Engine.create(tmp_path / "idx", int8, options=EngineOptions(device="cpu", runtime="auto", workers=0)) as engine:
        engine.index([str(p) for p in cups[1:]])
        assert engine.manifest.precision == "int8"
    with Engine.open(tmp_path / "idx", options=EngineOptions(device="cpu", runtime="auto", workers=0)) as engine:  # precision auto
        engine.index([str(SAMPLE / "chair")])  # the index's own graph, with no flag and no calibration
        assert engine.extractor.manifest == int8.manifest
        hits = engine.search(str(cups[0]), k=3)
        assert hits and Path(hits[0].path).parent == SAMPLE / "cup"
    with Engine.open(tmp_path / "idx", options=EngineOptions(device="cpu", runtime="auto", precision="fp32",
                                                               workers=0)) as engine:
        with pytest.raises(ExtractorMismatchError, match="precision"):  # float32 asked for, by name
            engine.search(str(cups[0]), k=3)


def test_int8_is_refused_where_it_cannot_run(calibration: Calibration, monkeypatch: pytest.MonkeyPatch) -> None:
    for runtime in ("torch", "onnx"):
        with pytest.raises(RuntimeUnsupportedError, match=f"OpenVINO only, not --runtime {runtime}"):
            create_runtime_extractor(CONFIG, "cpu", "int8", runtime=runtime, calibration=calibration)
    with pytest.raises(RetrievalError, match="needs calibration images"):
        create_runtime_extractor(CONFIG, "cpu", "int8", runtime="auto")
    monkeypatch.setattr("retrieval.runtimes.device_kind", lambda device: "cuda")
    with pytest.raises(RuntimeUnsupportedError, match="CPU only"):
        create_runtime_extractor(CONFIG, "cuda", "int8", runtime="auto", calibration=calibration)
    monkeypatch.undo()
    monkeypatch.setattr("retrieval.runtimes.session.installed", lambda name: False)
    with pytest.raises(RuntimeUnavailableError, match="OpenVINO"):
        create_runtime_extractor(CONFIG, "cpu", "int8", runtime="auto", calibration=calibration)


def test_the_cache_key_follows_the_calibration_set(calibration: Calibration) -> None:
    float_graph = descriptor_graph(create_extractor(CONFIG, "cpu", "fp32").manifest)
    fewer = Calibration(calibration.pixels[:10], calibration.heights[:10], calibration.widths[:10])
    touched = Calibration(calibration.pixels.copy(), calibration.heights, calibration.widths)
    touched.pixels[0, 0, 0, 0] ^= 1  # one bit of one pixel
    same = Calibration(calibration.pixels.copy(), calibration.heights.copy(), calibration.widths.copy())
    digests = [c.digest() for c in (calibration, fewer, touched)]
    assert len(set(digests)) == 3 and same.digest() == calibration.digest()
    paths = {quantized_graph(float_graph, d).path for d in digests}
    assert len(paths) == 3 and float_graph.path not in paths
    assert all(p.parent == float_graph.path.parent for p in paths)  # beside the float graph


def test_retrieve_index_precision_int8_calibrates_on_the_folders_it_indexes(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line: a new index calibrated on its own images, queried in int8 with no
    flag, also where the cache lacks its graph (the bundle keeps a copy); float32 and another
    runtime are refused in one line, and int8 for training too."""
    from typer.testing import CliRunner

    from retrieval.cli.app import app

    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(SAMPLE.glob("*/*.jpg"))[:12]:
        (photos / f"{p.parent.name}-{p.name}").write_bytes(p.read_bytes())
    (photos / "broken.jpg").write_bytes(b"not a jpeg")  # skipped by the calibration, failed by indexing
    index = str(tmp_path / "index")
    runner = CliRunner()
    made = runner.invoke(app, ["index", str(photos), "-i", index, "--precision", "int8", "--image-size", "128",
                               "--runtime", "auto", "--quiet"])  # the tests' default runtime is torch
    assert made.exit_code == 0, made.output
    with Engine.open(index, options=EngineOptions(runtime="auto")) as engine:
        assert engine.manifest.precision == "int8" and CALIBRATION_KEY in engine.manifest.extra
        assert len(engine) == 12
        source = sorted(photos.glob("*.jpg"))[0]
        expected = engine.catalog.rows_by_path([str(source)])[str(source)].id
    with Image.open(source) as im:  # a near-duplicate outside the index: the model runs for it
        query = tmp_path / "query.jpg"
        im.convert("RGB").crop((im.width // 20, im.height // 20, im.width - im.width // 20,
                                im.height - im.height // 20)).save(query)
    found = runner.invoke(app, ["query", str(query), "-i", index, "-k", "1", "--json", "--runtime", "auto"])
    assert found.exit_code == 0, found.output
    assert '"rank": 1, "id": %d,' % expected in found.output
    assert (Path(index) / BUNDLE_GRAPH).is_file()
    monkeypatch.setenv("RETRIEVE_CACHE_DIR", str(tmp_path / "another-machine"))  # an empty cache
    again = runner.invoke(app, ["query", str(query), "-i", index, "-k", "1", "--json", "--runtime", "auto"])
    assert again.exit_code == 0, again.output  # the graph came back from the bundle: no calibration images needed
    assert '"rank": 1, "id": %d,' % expected in again.output
    for flags, words in ((["--precision", "fp32", "--runtime", "auto"], "precision"),
                         (["--runtime", "onnx"], "OpenVINO only")):
        refused = runner.invoke(app, ["query", str(query), "-i", index, *flags])
        assert refused.exit_code != 0 and words in refused.output and "Traceback" not in refused.output
    with pytest.raises(RetrievalError, match="int8 runs the extractor's quantised graph"):
        create_extractor(CONFIG, "cpu", "int8")
