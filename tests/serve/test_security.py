"""Issue 13, point 5, one test per rule: loopback by default, read-only unless told, a
bearer token compared in constant time, images by id only, bounded uploads, 415/422 for
non-images, no internals in any answer, CORS off unless asked."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retrieval.cli.app import app as cli
from retrieval.serve import ServeSettings
from retrieval.serve.settings import ServeSettingsError
from typer.testing import CliRunner

from .. import badimages
from ..cli.conftest import one_error_line
from .conftest import TOKEN, serving


def test_cli_binds_loopback_read_only_by_default(bundle: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.update(
        host=host, port=port, settings=app.state.service.settings))
    result = CliRunner().invoke(cli, ["serve", "-i", str(bundle[0])])
    assert result.exit_code == 0, result.output
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000
    assert seen["settings"].allow_writes is False and seen["settings"].cors_origins == ()


def test_writes_need_a_long_enough_token() -> None:
    with pytest.raises(ServeSettingsError, match="token"):
        ServeSettings(allow_writes=True)
    with pytest.raises(ServeSettingsError, match="16 characters"):
        ServeSettings(allow_writes=True, token="short")
    result = CliRunner().invoke(cli, ["serve", "--allow-writes"], env={"RETRIEVE_SERVE_TOKEN": ""})
    assert "token" in one_error_line(result)


def test_read_only_server_refuses_every_write(client: TestClient) -> None:
    for method, url, body in [("POST", "/jobs/index", {"folders": ["/tmp"]}), ("POST", "/images/remove", {"ids": [1]}),
                              ("POST", "/images/1/tags", {"add": ["x"]}), ("PUT", "/images/1/metadata", {"a": 1})]:
        r = client.request(method, url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403, (url, r.text)
    assert client.get("/images", params={"tag": "x"}).json()["total"] == 0  # nothing was written


def test_writes_need_the_bearer_token_compared_in_constant_time(
        fresh_bundle: Callable[..., tuple[Path, Path]], extractor, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    bundle, _ = fresh_bundle()
    with serving(bundle, extractor, allow_writes=True, token=TOKEN) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
            r = client.post("/images/1/tags", json={"add": ["x"]}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.post("/images/1/tags", json={"add": ["x"]}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json() == {"changed": 1}
        assert client.get("/images/1").json()["metadata"] == {"tags": ["x"]}
    assert (b"wrong-token-wrong-token", TOKEN.encode()) in compared and (TOKEN.encode(), TOKEN.encode()) in compared


def test_images_are_served_by_id_only(client: TestClient) -> None:
    secret = Path(__file__)
    for url in [f"/images/{'..%2F' * 8}etc%2Fpasswd/file", "/images/..%2F..%2F/thumbnail", f"/images/{secret}/file",
                "/images/-1/file", "/images/1.5/file"]:
        r = client.get(url)
        assert r.status_code in (404, 422), (url, r.status_code)
        assert b"root:" not in r.content and b"def test_" not in r.content
    r = client.get("/images/1/file", params={"path": str(secret)})  # no such parameter: still image 1
    assert r.content == Path(client.get("/images/1").json()["path"]).read_bytes()


def test_a_file_swapped_after_indexing_is_not_served(fresh_bundle: Callable[..., tuple[Path, Path]],
                                                     extractor) -> None:
    bundle, photos = fresh_bundle()
    with serving(bundle, extractor) as client:
        indexed = Path(client.get("/images/1").json()["path"])
        indexed.unlink()
        os.symlink(__file__, indexed)  # now a link to a file outside the index
        for url in ("/images/1/file", "/images/1/thumbnail"):
            r = client.get(url)
            assert r.status_code == 404 and b"def test_" not in r.content
            assert "changed since it was indexed" in r.json()["detail"]


def test_uploads_are_bounded_in_bytes_before_parsing(fresh_bundle: Callable[..., tuple[Path, Path]],
                                                     extractor) -> None:
    bundle, _ = fresh_bundle()
    with serving(bundle, extractor, max_upload_bytes=4096) as client:
        big = os.urandom(200_000)
        r = client.post("/search/image", files={"image": ("big.jpg", big, "image/jpeg")})
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            boundary = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n"
            yield boundary
            for _ in range(50):
                yield b"x" * 10_000

        r = client.post("/search/image", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413


def test_uploads_are_bounded_in_pixels_before_decoding(fresh_bundle: Callable[..., tuple[Path, Path]],
                                                       extractor, tmp_path: Path) -> None:
    bundle, _ = fresh_bundle()
    bomb = badimages.write_bomb_header(tmp_path / "bomb.png", 20_000, 20_000)  # 400 Mpx declared, a few bytes
    small = badimages.sample_photos(1)[0]  # 300 x 198 = 59,400 px
    with serving(bundle, extractor, max_upload_pixels=50_000) as client:
        for path in (bomb, small):
            r = client.post("/search/image", files={"image": (path.name, path.read_bytes(), "image/png")})
            assert r.status_code == 415 and "pixels" in r.json()["detail"], r.text


@pytest.mark.parametrize("kind", sorted(badimages.UNDECODABLE))
def test_a_non_image_upload_is_415_never_500(client: TestClient, bad_dir: Path, kind: str) -> None:
    path = badimages.undecodable(bad_dir, kind)
    r = client.post("/search/image", files={"image": (path.name, path.read_bytes(), "image/jpeg")})
    assert r.status_code == 415, r.text
    assert badimages.UNDECODABLE[kind][2] in r.json()["detail"]  # the decoder's reason, as the CLI gives it
    assert str(bad_dir) not in r.text and "Traceback" not in r.text
    assert client.post("/search/image", data={"k": "3"}).status_code == 422  # no file at all


def test_no_stack_trace_or_internal_path_in_any_answer(fresh_bundle: Callable[..., tuple[Path, Path]],
                                                       extractor) -> None:
    bundle, _ = fresh_bundle()
    with serving(bundle, extractor, raise_server_exceptions=False) as client:
        r = client.post("/search", json={"id": 1, "rerank": True})  # the message names the bundle's folder
        assert r.status_code == 422 and "<path>" in r.json()["detail"] and str(bundle) not in r.text

        def bug(*args: object) -> None:
            raise ValueError(f"secret state at {bundle}/catalog.sqlite")

        service = client.app.state.service  # type: ignore[attr-defined]
        service.engine.search_many = bug
        r = client.post("/search", json={"id": 1})
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        service.engine.browse = bug
        r = client.get("/images")
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}


def test_cors_is_off_unless_an_origin_is_given(client: TestClient, fresh_bundle: Callable[..., tuple[Path, Path]],
                                               extractor) -> None:
    origin = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/search", headers=preflight).headers
    bundle, _ = fresh_bundle()
    with serving(bundle, extractor, cors_origins=("https://app.example",)) as allowed:
        r = allowed.get("/health", headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-origin" not in allowed.get("/health", headers=origin).headers
