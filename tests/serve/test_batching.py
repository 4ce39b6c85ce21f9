"""Concurrent searches share forward passes, each request gets its own answer, one bad
query fails alone, and searches keep answering while an index job runs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from retrieval import Engine
from retrieval.errors import BadQueryError
from retrieval.serve.batching import SearchBatcher, SearchParams

from .conftest import TOKEN, copy_sample, serving


def run_batch(queries: Sequence[Any], params: SearchParams, window_s: float = 0.05, max_batch: int = 32,
              arrive_s: float = 0.0) -> tuple[list[Any], list[list[Any]]]:
    """Send `queries` concurrently (`arrive_s` apart) through a batcher whose engine answers
    [query, k] and fails on "bad"; returns each request's answer (or error) and the batches."""
    batches: list[list[Any]] = []

    def search_many(qs: Sequence[Any], p: SearchParams) -> list[list[Any]]:
        batches.append(list(qs))
        if "bad" in qs:
            raise BadQueryError("a bad query")
        return [[q, p.k] for q in qs]

    async def main() -> list[Any]:
        pool = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        batcher = SearchBatcher(search_many, lambda fn, *a: loop.run_in_executor(pool, fn, *a), window_s, max_batch)
        batcher.start()

        async def one(i: int, q: Any) -> Any:
            await asyncio.sleep(i * arrive_s)
            try:
                return await batcher.search(q, params)
            except BadQueryError as e:
                return e

        try:
            return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(queries))))
        finally:
            await batcher.stop()
            pool.shutdown()

    return asyncio.run(main()), batches


def test_requests_within_the_window_share_one_call_and_get_their_own_hits() -> None:
    answers, batches = run_batch(list(range(8)), SearchParams(k=3))
    assert batches == [list(range(8))]
    assert answers == [[i, 3] for i in range(8)]


def test_batches_are_capped_and_one_at_a_time_is_possible() -> None:
    _, batches = run_batch(list(range(10)), SearchParams(), max_batch=4)
    assert [len(b) for b in batches] == [4, 4, 2]
    _, batches = run_batch(list(range(5)), SearchParams(), max_batch=1)
    assert batches == [[0], [1], [2], [3], [4]]


def test_different_parameters_are_different_batches() -> None:
    batches: list[tuple[int, list[Any]]] = []

    def search_many(qs: Sequence[Any], p: SearchParams) -> list[list[Any]]:
        batches.append((p.k, list(qs)))
        return [[q] for q in qs]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        batcher = SearchBatcher(search_many, lambda fn, *a: loop.run_in_executor(None, fn, *a), 0.05, 32)
        batcher.start()
        await asyncio.gather(*(batcher.search(i, SearchParams(k=1 + i % 2)) for i in range(6)))
        await batcher.stop()

    asyncio.run(main())
    assert sorted(batches) == [(1, [0, 2, 4]), (2, [1, 3, 5])]


def test_a_bad_query_fails_alone() -> None:
    answers, batches = run_batch(["a", "bad", "c"], SearchParams(k=2))
    assert answers[0] == ["a", 2] and answers[2] == ["c", 2]
    assert isinstance(answers[1], BadQueryError)
    assert batches[0] == ["a", "bad", "c"] and sorted(map(tuple, batches[1:])) == [("a",), ("bad",), ("c",)]


def test_search_many_embeds_all_images_in_one_forward_pass(bundle: tuple[Path, Path], extractor,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    photos = sorted(bundle[1].glob("*/*.jpg"))[:4]
    with Engine.open(bundle[0], extractor=extractor) as engine:
        images = [engine.decode_query(p.read_bytes()) for p in photos]
        one_by_one = [[(h.id, round(h.score, 4)) for h in engine.search(im, k=3)] for im in images]
        calls: list[int] = []
        embed = type(extractor).embed_images
        monkeypatch.setattr(type(extractor), "embed_images", lambda self, ims, *a, **kw: (
            calls.append(len(ims)), embed(self, ims, *a, **kw))[1])
        together = engine.search_many([*images, 7], k=3)
    assert calls == [4]
    assert [[(h.id, round(h.score, 4)) for h in hits] for hits in together[:4]] == one_by_one
    assert 7 not in [h.id for h in together[4]] and len(together[4]) == 3


def test_concurrent_uploads_through_the_app_are_batched(bundle: tuple[Path, Path], extractor) -> None:
    photos = sorted(bundle[1].glob("*/*.jpg"))
    with serving(bundle[0], extractor, batch_window_ms=200) as client:
        def one(path: Path) -> int:
            r = client.post("/search/image", files={"image": (path.name, path.read_bytes(), "image/jpeg")},
                            data={"k": "1"})
            assert r.status_code == 200
            return r.json()["results"][0]["id"]

        with ThreadPoolExecutor(6) as pool:
            top = list(pool.map(one, photos[:6]))
        metrics = client.get("/metrics").text
    assert len(set(top)) == 6  # each photo found itself: no answers were swapped
    count = next(line for line in metrics.splitlines() if line.startswith("retrieve_search_batch_size_count"))
    assert int(count.split()[-1]) < 6  # fewer forward passes than searches


def test_searches_answer_while_an_index_job_runs(tmp_path: Path, extractor) -> None:
    photos = copy_sample(tmp_path / "photos", ("cup",))
    copy_sample(tmp_path / "more", ("chair",))
    with Engine.create(tmp_path / "bundle", extractor) as engine:
        engine.index([photos])
    with serving(tmp_path / "bundle", extractor, allow_writes=True, token=TOKEN,
                 index_roots=(str(tmp_path),)) as client:
        service = client.app.state.service  # type: ignore[attr-defined]
        release, started = threading.Event(), threading.Event()
        real_run: Callable[..., Any] = service.jobs.run

        def held(folders: Sequence[str], progress: Callable[[str, int, int], None]) -> dict[str, Any]:
            started.set()
            assert release.wait(60)
            return real_run(folders, progress)

        service.jobs.run = held
        auth = {"Authorization": f"Bearer {TOKEN}"}
        job = client.post("/jobs/index", json={"folders": [str(tmp_path / "more")]}, headers=auth)
        assert job.status_code == 202
        assert started.wait(60)
        assert client.get(f"/jobs/{job.json()['id']}", headers=auth).json()["state"] == "running"
        r = client.post("/search", json={"id": 1, "k": 2})  # answered while the writer thread is busy
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        release.set()
        events = client.get(f"/jobs/{job.json()['id']}/events", headers=auth).text
        assert "event: done" in events and '"added": 5' in events
        assert client.get("/info").json()["count"] == 10
        assert any("/more/chair/" in h["path"] for h in client.post("/search", json={"id": 1, "k": 9}).json()["results"])
        outside = client.post("/jobs/index", json={"folders": ["/etc"]}, headers=auth)
        assert outside.status_code == 403
