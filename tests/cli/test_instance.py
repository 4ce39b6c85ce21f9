"""`retrieve index --local sift` and `retrieve query --rerank/--no-rerank` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("cv2")

from ..local.scenes import homography, photo, poster  # noqa: E402
from .conftest import invoke  # noqa: E402


def test_index_with_local_features_then_query_shows_inliers_and_regions(tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(6):
        Image.fromarray(poster(i)).save(refs / f"p{i}.png")
    query = tmp_path / "photo.jpg"
    Image.fromarray(photo(poster(4), homography(480, 360, seed=4), (640, 480), seed=4)).save(query, quality=90)
    bundle = str(tmp_path / "b")

    res = invoke("index", str(refs), "-i", bundle, "--local", "sift", "--local-param", "max_features=800",
                 "--workers", "0", "--device", "cpu", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(invoke("info", "-i", bundle, "--json").stdout)
    assert info["local_features"] == {"name": "sift", "params": {**info["local_features"]["params"],
                                                                   "max_features": 800}}

    ranked = json.loads(invoke("query", str(query), "-i", bundle, "-k", "3", "--json").stdout)["results"]
    assert Path(ranked[0]["path"]).name == "p4.png" and ranked[0]["inliers"] >= 15
    assert len(ranked[0]["region"]) == 4 and all(len(corner) == 2 for corner in ranked[0]["region"])
    plain = json.loads(invoke("query", str(query), "-i", bundle, "-k", "3", "--no-rerank", "--json").stdout)
    assert all(r["inliers"] is None and r["region"] is None for r in plain["results"])

    text = invoke("query", str(query), "-i", bundle, "-k", "3")
    assert text.exit_code == 0 and text.stdout.splitlines()[0].split("\t") == ["rank", "score", "id", "path",
                                                                              "inliers"]


def test_bad_local_options_are_one_line_errors_and_leave_no_index(tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.fromarray(poster(0)).save(refs / "p0.png")
    for args, message in ((("--local", "surf"), "sift"), (("--local-param", "max_features=abc"), "max_features")):
        res = invoke("index", str(refs), "-i", str(tmp_path / "b"), "--workers", "0", *args)
        assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
        assert not (tmp_path / "b").exists()
    invoke("index", str(refs), "-i", str(tmp_path / "plain"), "--workers", "0")
    res = invoke("query", str(refs / "p0.png"), "-i", str(tmp_path / "plain"), "--rerank")
    assert res.exit_code != 0 and "local features" in res.output and "Traceback" not in res.output
