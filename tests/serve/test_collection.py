"""The collection-wide endpoints (duplicates, map) and the web page's files."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from retrieval import Engine
from retrieval.serve.routes.page import STATIC

from .conftest import serving


def test_duplicates_show_each_group_with_size_and_resolution(fresh_bundle: Callable[..., tuple[Path, Path]],
                                                             extractor) -> None:
    bundle, photos = fresh_bundle()
    original = sorted((photos / "cup").glob("*.jpg"))[0]
    copy = shutil.copyfile(original, photos / "cup" / "copy.jpg")
    with Engine.open(bundle, extractor=extractor) as engine:
        engine.index([photos])
    with serving(bundle, extractor) as client:
        for params in ({"exact": "true"}, {"threshold": "0.95"}):
            groups = client.get("/duplicates", params=params).json()["groups"]
            assert len(groups) == 1, params
            images = groups[0]["images"]
            assert sorted(i["path"] for i in images) == sorted([str(copy), str(original)])
            assert all(i["size"] == original.stat().st_size for i in images)
            by_path = {i["path"]: i for i in images}
            assert (by_path[str(original)]["width"], by_path[str(original)]["height"]) == (300, 198)
        assert client.get("/duplicates", params={"threshold": "0.2"}).status_code == 422


def test_map_places_every_image_and_keeps_classes_apart(client: TestClient) -> None:
    body = client.get("/map").json()
    assert body["total"] == 10 and len(body["points"]) == 10
    xy = np.array([[p["x"], p["y"]] for p in body["points"]])
    assert xy.min() == 0.0 and xy.max() == 1.0  # scaled to the unit square
    cls = {i["id"]: "/cup/" in i["path"] for i in client.get("/images").json()["images"]}
    labels = [cls[p["id"]] for p in body["points"]]
    same, other = [], []
    for a, b in combinations(range(10), 2):
        (same if labels[a] == labels[b] else other).append(np.linalg.norm(xy[a] - xy[b]))
    assert np.mean(same) < np.mean(other)
    sampled = client.get("/map", params={"limit": 4}).json()
    assert len(sampled["points"]) == 4 and sampled["total"] == 10
    assert client.get("/map", params={"limit": 0}).status_code == 422


def test_the_page_and_every_asset_it_names_are_served_from_here(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("static/") for a in assets)
    for asset in assets:
        assert client.get("/" + asset).status_code == 200, asset
    for path in STATIC.iterdir():  # vendored: nothing refers to another host (an XML namespace is a name, not fetched)
        assert not re.search(r"https?://|//[a-z]", re.sub(r'xmlns="[^"]*"', "", path.read_text())), path.name
    assert client.get("/static/..%2F..%2Fserve%2Fapp.py").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]  # the page is not part of the API


def test_the_page_script_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run([node, "--check", str(STATIC / "app.js")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
