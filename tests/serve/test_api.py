"""The API as a client sees it: every read endpoint against the Engine's own answers."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from retrieval import Engine
from retrieval.pictures import THUMBNAIL_FOLDER


def upload(client: TestClient, path: Path, **form: str):
    return client.post("/search/image", files={"image": (path.name, path.read_bytes(), "image/jpeg")}, data=form)


def ids_of(response) -> list[int]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def test_search_by_upload_finds_the_photo_and_its_class(client: TestClient, bundle: tuple[Path, Path]) -> None:
    cup = sorted((bundle[1] / "cup").glob("*.jpg"))[2]
    r = upload(client, cup, k="5")
    results = r.json()["results"]
    assert len(results) == 5
    assert results[0]["path"] == str(cup) and results[0]["score"] > 0.99
    scores = [h["score"] for h in results]
    assert scores == sorted(scores, reverse=True)
    assert sum("/cup/" in h["path"] for h in results) >= 4  # its class first


def test_search_by_upload_with_a_filter(client: TestClient, bundle: tuple[Path, Path]) -> None:
    cup = sorted((bundle[1] / "cup").glob("*.jpg"))[0]
    r = upload(client, cup, k="10", filter=json.dumps({"folders": [str(bundle[1] / "chair")]}))
    paths = [h["path"] for h in r.json()["results"]]
    assert len(paths) == 5 and all("/chair/" in p for p in paths)


def test_search_by_id_and_by_vector_agree_with_the_engine(client: TestClient, bundle: tuple[Path, Path],
                                                          extractor) -> None:
    with Engine.open(bundle[0], extractor=extractor) as engine:
        expected = [h.id for h in engine.search(3, k=4)]
        vector = engine.vectors([3])[0]
    assert ids_of(client.post("/search", json={"id": 3, "k": 4})) == expected
    by_vector = ids_of(client.post("/search", json={"vector": vector.tolist(), "k": 5}))
    assert by_vector[0] == 3 and by_vector[1:] == expected


def test_similar_and_recommend_agree_with_the_engine(client: TestClient, bundle: tuple[Path, Path],
                                                     extractor) -> None:
    with Engine.open(bundle[0], extractor=extractor) as engine:
        similar = [h.id for h in engine.similar(2, k=3)]
        recommended = [h.id for h in engine.recommend([1, 2], negative_ids=[7], k=4)]
    assert ids_of(client.get("/images/2/similar", params={"k": 3})) == similar
    assert ids_of(client.post("/recommend", json={"liked": [1, 2], "disliked": [7], "k": 4})) == recommended


def test_search_refuses_bad_arguments_with_422(client: TestClient) -> None:
    assert client.post("/search", json={"id": 1, "vector": [1.0]}).status_code == 422  # both
    assert client.post("/search", json={"k": 3}).status_code == 422  # neither
    assert client.post("/search", json={"vector": [1.0, 2.0]}).status_code == 422  # wrong dimension
    assert client.post("/search", json={"id": 999}).status_code == 422  # not indexed
    assert client.post("/search", json={"id": 1, "k": 0}).status_code == 422
    assert client.post("/search", json={"id": 1, "colour": "red"}).status_code == 422  # unknown field
    assert client.post("/recommend", json={"liked": []}).status_code == 422


def test_listing_pages_through_every_image_once(client: TestClient, bundle: tuple[Path, Path]) -> None:
    seen, after = [], 0
    while True:
        page = client.get("/images", params={"limit": 3, "after": after}).json()
        assert page["total"] == 10
        seen += [i["id"] for i in page["images"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert sorted(seen) == seen and len(set(seen)) == 10
    cups = client.get("/images", params={"folder": str(bundle[1] / "cup")}).json()
    assert cups["total"] == 5 and all("/cup/" in i["path"] for i in cups["images"])
    first = cups["images"][0]
    assert first["width"] > 0 and first["format"] == "JPEG" and first["size"] == Path(first["path"]).stat().st_size


def test_one_image_and_unknown_ids(client: TestClient) -> None:
    assert client.get("/images/4").json()["id"] == 4
    for url in ("/images/999", "/images/999/file", "/images/999/thumbnail"):
        r = client.get(url)
        assert r.status_code == 404 and "999" in r.json()["detail"]


def test_original_file_is_the_indexed_bytes(client: TestClient) -> None:
    info = client.get("/images/5").json()
    r = client.get("/images/5/file")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == Path(info["path"]).read_bytes()
    assert r.headers["etag"] and "max-age" in r.headers["cache-control"]


def test_thumbnails_are_sized_cached_and_revalidated(client: TestClient, bundle: tuple[Path, Path]) -> None:
    r = client.get("/images/6/thumbnail", params={"size": 128})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(r.content)) as thumb:
        assert max(thumb.size) == 128
    assert list((bundle[0] / THUMBNAIL_FOLDER / "128").glob("*.jpg"))  # cached in the bundle
    again = client.get("/images/6/thumbnail", params={"size": 128}, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    other = client.get("/images/6/thumbnail", params={"size": 64})
    assert other.headers["etag"] != r.headers["etag"]
    assert client.get("/images/6/thumbnail", params={"size": 100}).status_code == 422


def test_info_health_docs(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["count"] == 10 and info["writes"] is False and "path" not in info
    assert client.get("/health").json() == {"status": "ok"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "https://" not in docs.text  # Swagger UI from this server, not a CDN
    for asset in re.findall(r'(?:src|href)="([^"]+)"', docs.text):
        assert client.get(asset).status_code == 200, asset
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search/image", "/search", "/recommend", "/images", "/metrics"} <= set(paths)


def test_metrics_count_requests_by_route(client: TestClient) -> None:
    before = _counter(client.get("/metrics").text, '/images/{image_id}', "GET", 200)
    client.get("/images/1")
    client.get("/images/2")
    text = client.get("/metrics").text
    assert _counter(text, "/images/{image_id}", "GET", 200) == before + 2
    assert "retrieve_index_images 10" in text.splitlines()
    assert 'retrieve_http_request_seconds_bucket{route="/images/{image_id}",method="GET",le="+Inf"}' in text


def _counter(text: str, route: str, method: str, status: int) -> int:
    prefix = f'retrieve_http_requests_total{{route="{route}",method="{method}",status="{status}"}} '
    return next((int(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0)


@pytest.mark.parametrize("size", [64, 512])
def test_thumbnail_never_upscales_beyond_size(client: TestClient, size: int) -> None:
    with Image.open(io.BytesIO(client.get("/images/1/thumbnail", params={"size": size}).content)) as thumb:
        assert max(thumb.size) == min(size, 300)  # the sample photos are 300 px wide at most
