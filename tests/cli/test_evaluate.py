"""`retrieve eval`: mAP, P@k and R@k of an index against independent references
(scikit-learn, and retrieval.evaluation on vectors embedded here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval import Engine
from retrieval.cli.app import app
from retrieval.evaluation.labels import read_image_list
from retrieval.evaluation.metrics import evaluate
from retrieval.images.decode import load_image
from retrieval.options import EngineOptions

from ..conftest import SAMPLE
from ..modelhelpers import labelled_photos, sample_ap
from .conftest import one_error_line

runner = CliRunner()


def test_eval_in_an_existing_index_dir(indexed: Path, sample_dir: Path) -> None:
    res = runner.invoke(app, ["eval", str(sample_dir), "--index-dir", str(indexed), "--at", "4", "--json", "-q"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert (report["gallery"], report["leave_one_out"]) == (50, True) and 0 < report["map"] <= 1
    assert set(report["precision_at"]) == {"4"}


@pytest.fixture(scope="module")
def indexed_sample(tmp_path_factory: pytest.TempPathFactory,
                   extractor) -> tuple[Path, Path, np.ndarray, list[str], list[str]]:  # noqa: ANN001
    """A bundle of the 50 photos (shared warm model), the photos' folder, their vectors,
    labels and paths; built once for the eval tests, which only read it."""
    root = tmp_path_factory.mktemp("eval")
    photos = shutil.copytree(SAMPLE, root / "photos", ignore=shutil.ignore_patterns("*.md"))
    with Engine.create(root / "bundle", extractor, options=EngineOptions(device="cpu", workers=0)) as engine:
        engine.index([photos])
        paths = [str(p) for p in labelled_photos(photos)]
        rows = engine.catalog.rows_by_path(paths)
        vectors = engine.vectors([rows[p].id for p in paths])
    return root / "bundle", photos, vectors, [Path(p).parent.name for p in paths], paths


def test_eval_on_a_labelled_folder_matches_sklearn(indexed_sample) -> None:  # noqa: ANN001
    bundle, sample_dir, vectors, labels, _ = indexed_sample
    res = runner.invoke(app, ["eval", str(sample_dir), "-i", str(bundle), "--json", "--at", "1", "--at", "4"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["leave_one_out"] and (got["gallery"], got["queries_scored"]) == (50, 50)
    assert got["map"] == pytest.approx(sample_ap(vectors, labels), abs=1e-5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top4 = np.argsort(-sims, axis=1)[:, :4]
    hits = np.array([[labels[j] == labels[i] for j in row] for i, row in enumerate(top4)])
    assert got["precision_at"]["4"] == pytest.approx(hits.mean(), abs=1e-6)
    assert got["recall_at"]["4"] == pytest.approx((hits.sum(1) / 4).mean(), abs=1e-6)  # 4 relevant per query

    table = runner.invoke(app, ["eval", str(sample_dir), "-i", str(bundle)])
    assert table.exit_code == 0 and "mAP" in table.stdout and "P@10" in table.stdout


def test_eval_with_query_and_gallery_lists(indexed_sample, tmp_path: Path, extractor) -> None:  # noqa: ANN001
    bundle, _, vectors, labels, paths = indexed_sample
    queries, gallery = paths[::5], [p for i, p in enumerate(paths) if i % 5]
    (tmp_path / "q.txt").write_text("\n".join(queries))  # labels from the parent folders
    (tmp_path / "g.csv").write_text("path,label\n" + "\n".join(f"{p},{Path(p).parent.name}" for p in gallery))
    res = runner.invoke(app, ["eval", "--queries", str(tmp_path / "q.txt"), "--gallery", str(tmp_path / "g.csv"),
                              "-i", str(bundle), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (got["queries"], got["gallery"], got["leave_one_out"]) == (10, 40, False)  # only the listed gallery
    q = read_image_list(tmp_path / "q.txt")
    q_vecs = extractor.embed_images([load_image(p).image for p in q.paths])
    g_pos = [paths.index(p) for p in gallery]
    expected = evaluate(q_vecs, q.labels, vectors[g_pos], [labels[i] for i in g_pos]).map
    assert got["map"] == pytest.approx(expected, abs=1e-4)

    res = runner.invoke(app, ["eval", "--queries", str(tmp_path / "q.txt")])
    assert res.exit_code == 2 and "--gallery" in one_error_line(res)
