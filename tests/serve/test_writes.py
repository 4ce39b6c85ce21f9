"""Writes with the token: metadata, tags and removal take effect for the next read, and
bad writes are refused with 4xx, never applied in part."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import TOKEN, serving

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_metadata_tags_and_remove(fresh_bundle: Callable[..., tuple[Path, Path]], extractor) -> None:
    bundle, _ = fresh_bundle()
    with serving(bundle, extractor, allow_writes=True, token=TOKEN) as client:
        r = client.put("/images/2/metadata", json={"shop": "north", "stars": 4}, headers=AUTH)
        assert r.status_code == 200
        assert client.get("/images/2").json()["metadata"] == {"shop": "north", "stars": 4}
        assert [i["id"] for i in client.get("/images", params={"meta": "stars=4"}).json()["images"]] == [2]
        hits = client.post("/search", json={"id": 1, "k": 4, "filter": {"metadata": {"shop": "north"}}}).json()
        assert [h["id"] for h in hits["results"]] == [2]

        bad = client.put("/images/2/metadata", json={"bad key!": 1}, headers=AUTH)
        assert bad.status_code == 422 and client.get("/images/2").json()["metadata"]["shop"] == "north"
        assert client.post("/images/99/tags", json={"add": ["x"]}, headers=AUTH).status_code == 400

        assert client.post("/images/remove", json={"ids": [3]}, headers=AUTH).json() == {"removed": 1}
        assert client.get("/images/3").status_code == 404
        ids = [h["id"] for h in client.post("/search", json={"id": 1, "k": 4}).json()["results"]]
        assert 3 not in ids and len(ids) == 3  # the other four cups, less the removed one
        assert client.get("/info").json()["count"] == 4


def test_index_jobs_are_listed_and_unknown_ones_404(fresh_bundle: Callable[..., tuple[Path, Path]],
                                                    extractor, tmp_path: Path) -> None:
    bundle, photos = fresh_bundle()
    with serving(bundle, extractor, allow_writes=True, token=TOKEN, index_roots=(str(photos),)) as client:
        assert client.get("/jobs/7", headers=AUTH).status_code == 404
        job = client.post("/jobs/index", json={"folders": [str(photos)]}, headers=AUTH).json()
        events = client.get(f"/jobs/{job['id']}/events", headers=AUTH)
        assert events.headers["content-type"].startswith("text/event-stream")
        states = [json.loads(line[6:]) for line in events.text.splitlines() if line.startswith("data: ")]
        assert states[-1]["state"] == "done" and states[-1]["report"]["unchanged"] == 5
        assert all(a != b for a, b in zip(states, states[1:]))  # an event only when something changed
        assert [j["state"] for j in client.get("/jobs", headers=AUTH).json()] == ["done"]
        missing = client.post("/jobs/index", json={"folders": [str(photos / "gone")]}, headers=AUTH).json()
        deadline = time.monotonic() + 60
        while (final := client.get(f"/jobs/{missing['id']}", headers=AUTH).json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, final
            time.sleep(0.05)
        assert final["state"] == "failed" and "<path>" in final["error"] and str(photos) not in final["error"]
        relative = client.post("/jobs/index", json={"folders": ["cup"]}, headers=AUTH)
        assert relative.status_code == 403
