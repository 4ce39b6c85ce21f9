"""Index lifecycle through the Engine and the CLI: switching backends, deletes, filters,
tags and duplicates.

Synthetic bundles (stub extractor, vectors written straight into the catalog) make the
backend checks fast and prove that no image is embedded; the CLI checks run on the
indexed sample photos, with a byte-identical copy and a resized PNG re-encode added.
"""

from __future__ import annotations

import datetime as dt
import json
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval import Engine, ann
from retrieval.cli.app import app
from retrieval.filters import Filter

from .annhelpers import (StubExtractor, Synthetic, clustered, commit, copy_bundle, photo_template,
                         synthetic_bundle, synthetic_records, unit)

DIM = 32

# Every backend with parameters small enough for 2,000 vectors; IVF trains at this size.
BACKENDS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"train_min": 500, "nprobe": 4},
    "ivfpq": {"train_min": 500, "pq_m": 4, "nprobe": 4},
    "hnsw": {"M": 8, "ef_search": 32},
    "annoy": {"n_trees": 8},
}

runner = CliRunner()


def _queries(s: Synthetic, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picks = rng.choice(s.live, n)
    return unit(np.stack([s.vectors[i] for i in picks]) + 0.3 * rng.standard_normal((n, DIM)) / np.sqrt(DIM))


def _recall(s: Synthetic, queries: np.ndarray, k: int = 10, where: Filter | None = None,
            among: set[int] | None = None) -> float:
    """Mean overlap with brute force; also checks the count and eligibility of each result."""
    hits = 0
    for q in queries:
        got = [h.id for h in s.engine.search(q, k=k, where=where)]
        want = s.exact_top(q, k, among)
        assert len(got) == len(want) == min(k, len(among if among is not None else s.live))
        assert not set(got) & s.removed
        assert among is None or set(got) <= among
        hits += len(set(got) & set(want))
    return hits / sum(min(k, len(among if among is not None else s.live)) for _ in queries)


@pytest.fixture()
def synthetic(tmp_path: Path) -> Synthetic:
    s = synthetic_bundle(tmp_path / "bundle", clustered(2000, DIM, 20, seed=20), "flat")
    yield s
    s.engine.close()


def test_reindex_switches_every_backend_from_the_stored_vectors(synthetic: Synthetic, tmp_path: Path) -> None:
    """Each backend is built from the catalog (the stub extractor would fail on any
    embedding), keeps its parameters across processes, and searches like exact search."""
    queries = _queries(synthetic, 30, seed=21)
    for name, params in [*BACKENDS.items(), ("flat", {})]:
        described = synthetic.engine.reindex(name, **params)
        assert (described["type"], described["effective"], described["count"]) == (name, name, 2000)
        assert {k: v for k, v in described["params"].items() if k in params} == params
        assert _recall(synthetic, queries) >= (0.99 if name == "flat" else 0.85), name
        with Engine.open(synthetic.engine.path, extractor=StubExtractor(DIM)) as again:
            shown = again.info()["index"]
            assert (shown["type"], shown["params"]) == (name, described["params"])
            assert not again._cache.rebuilt_unsaved, "the saved index must load, not be rebuilt"


def test_reindex_and_info_on_the_command_line(synthetic: Synthetic) -> None:
    path = str(synthetic.engine.path)
    synthetic.engine.close()
    result = runner.invoke(app, ["reindex", "--backend", "hnsw", "--param", "M=12", "--param", "ef_search=40",
                                 "-i", path, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"] == {"M": 12, "ef_construction": 80, "ef_search": 40}
    info = runner.invoke(app, ["info", "-i", path])
    assert "ann index   hnsw, M=12, ef_construction=80, ef_search=40" in info.stdout
    bad = runner.invoke(app, ["reindex", "--backend", "hnsw", "--param", "nlist=12", "-i", path])
    assert bad.exit_code == 2 and "has no parameter 'nlist'" in bad.stderr
    assert "Traceback" not in bad.output


def test_auto_follows_the_collection_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto is exact while small and switches (one rebuild) once the collection grows."""
    monkeypatch.setattr(ann, "AUTO_EXACT_BELOW", 1000)
    vectors = clustered(1500, DIM, 10, seed=22)
    s = synthetic_bundle(tmp_path / "auto", vectors[:900], "auto")
    with s.engine:
        assert s.engine.info()["index"]["effective"] == "flat"
        commit(s.engine, synthetic_records(vectors[900:], seed=1, start=900))
        described = s.engine.info()["index"]
        assert (described["type"], described["effective"], described["count"]) == ("auto", "hnsw", 1500)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_deleted_images_never_come_back_on_any_backend(tmp_path: Path, name: str) -> None:
    """After most of the collection is deleted (tombstones, buffers, compaction), every
    search returns min(k, live) results, none deleted, also in a fresh process."""
    s = synthetic_bundle(tmp_path / name, clustered(2000, DIM, 20, seed=23), name, BACKENDS[name])
    rng = np.random.default_rng(24)
    gone = rng.choice(s.live, 1950, replace=False)
    with s.engine:
        for chunk in np.array_split(gone, 4):
            assert s.engine.remove(int(i) for i in chunk) == len(chunk)
            s.removed |= set(map(int, chunk))
            assert _recall(s, _queries(s, 5, seed=len(s.removed)), k=10) >= 0.8
        assert len(s.live) == 50 and len(s.engine) == 50
        for k in (49, 50, 80):
            _recall(s, _queries(s, 5, seed=k), k=k)
        assert not s.engine.ann.needs_rebuild(), "a write should have compacted the index"
    with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as again:
        ids = [h.id for h in again.search(s.vectors[s.live[0]], k=100)]
        assert sorted(ids) == s.live


@pytest.mark.parametrize("name", ["flat", "ivf", "hnsw", "annoy"])
def test_filters_return_k_matching_results(synthetic: Synthetic, name: str) -> None:
    """Folder, glob, type, size, date and tag filters: k results when k images match,
    all matching, close to brute force over the matching set."""
    synthetic.engine.reindex(name, **BACKENDS[name])
    recs = synthetic.records
    sizes = sorted(r.size for r in recs.values())
    low, high = sizes[len(sizes) // 3], sizes[len(sizes) // 2]
    mtimes = sorted(r.mtime_ns for r in recs.values())
    since_ns, until_ns = mtimes[100], mtimes[400]
    tagged = sorted(recs)[::37]
    synthetic.engine.tag(tagged, add=["blue"])
    cases: list[tuple[Filter, set[int]]] = [
        (Filter(folders=("/synthetic/beta",)), {i for i, r in recs.items() if "/beta/" in r.path}),
        (Filter(path_glob="*/gamma/img_01*"), {i for i, r in recs.items() if fnmatch(r.path, "*/gamma/img_01*")}),
        (Filter(formats=("png",)), {i for i, r in recs.items() if r.format == "PNG"}),
        (Filter(min_bytes=low, max_bytes=high), {i for i, r in recs.items() if low <= r.size <= high}),
        (Filter(since=_from_ns(since_ns), until=_from_ns(until_ns)),
         {i for i, r in recs.items() if since_ns <= r.mtime_ns <= until_ns}),
        (Filter(tags=("blue",)), set(tagged)),
        (Filter(tags=("red", "blue")), {i for i in tagged if i in recs and "red" in recs[i].metadata.get("tags", [])}),
        (Filter(formats=("jpeg",), folders=("/synthetic/alpha",), tags=("red",)),
         {i for i, r in recs.items() if r.format == "JPEG" and "/alpha/" in r.path and r.metadata.get("tags")}),
    ]
    queries = _queries(synthetic, 6, seed=25)
    for where, matching in cases:
        assert 5 <= len(matching) < 2000, where
        for k in (10, len(matching)):
            assert _recall(synthetic, queries, k=k, where=where, among=matching) >= 0.85, (where, k)
    synthetic.engine.tag(tagged[:3], remove=["blue"])
    assert {h.id for h in synthetic.engine.search(queries[0], k=100, where=Filter(tags=("blue",)))} == set(tagged[3:])


def _from_ns(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc)


# ---------------------------------------------------------------------- the CLI on real photos


@pytest.fixture()
def photos(tmp_path_factory: pytest.TempPathFactory, extractor, tmp_path: Path):
    template = photo_template(tmp_path_factory.getbasetemp() / "photo-template", extractor)
    return template, copy_bundle(template, tmp_path / "bundle")


def _cli(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_dupes_lists_identical_and_near_copies(photos) -> None:
    template, bundle = photos
    exact = _cli("dupes", "--exact", "-i", str(bundle), "--json")
    assert [sorted(g["paths"]) for g in exact] == [sorted([str(template.original), str(template.exact_copy)])]
    assert exact[0]["exact"] is True
    near = _cli("dupes", "-i", str(bundle), "--json", "-q")
    groups = [set(g["paths"]) for g in near]
    assert {str(template.original), str(template.exact_copy)} in groups
    assert {str(template.near_source), str(template.near_copy)} in groups
    assert len(groups) == 2, "distinct photos of one class must not be grouped"
    by_near = next(g for g in near if str(template.near_copy) in g["paths"])
    assert not by_near["exact"] and 0.9 <= by_near["score"] < 1.0


def test_query_dedup_folds_copies_and_still_returns_k(photos) -> None:
    """Another photo of the class finds both members of a copy pair; --dedup keeps the
    better-ranked one, lists the other under it, and fills the list to k."""
    template, bundle = photos
    for first, copy in [(template.original, template.exact_copy), (template.near_source, template.near_copy)]:
        query = str(sorted(first.parent.iterdir())[1])
        plain = _cli("query", query, "-k", "6", "-i", str(bundle), "--json")["results"]
        assert {str(first), str(copy)} <= {r["path"] for r in plain}
        folded = _cli("query", query, "-k", "6", "--dedup", "-i", str(bundle), "--json")["results"]
        assert len(folded) == 6
        kept = [r for r in folded if r["path"] in (str(first), str(copy))]
        assert len(kept) == 1 and kept[0]["duplicates"] == [str(copy) if kept[0]["path"] == str(first) else str(first)]


def test_query_filters_and_tags_on_the_command_line(photos) -> None:
    template, bundle = photos
    query = str(template.original)
    cups = template.photos / "cup"

    def results(*options: str) -> list[dict[str, Any]]:
        return _cli("query", query, "-k", "8", "-i", str(bundle), "--json", *options)["results"]

    folder = results("--folder", str(cups))
    assert len(folder) == 5 and all(r["path"].startswith(str(cups) + "/") for r in folder)
    old = results("--until", "2002-01-01")
    assert {r["path"] for r in old} == {str(p) for p in cups.iterdir()}
    assert all(not r["path"].startswith(str(cups)) for r in results("--since", "2002-01-01"))
    png = results("--type", "png")
    assert [r["path"] for r in png] == [str(template.near_copy)]
    tagged = [str(p) for p in sorted((template.photos / "starfish").iterdir())[:3]]
    assert _cli("tag", *tagged, "--add", "sea", "--add", "fav", "-i", str(bundle), "--json") == {"changed": 3}
    _cli("tag", tagged[0], "--remove", "fav", "-i", str(bundle), "--json")
    assert {r["path"] for r in results("--tag", "sea")} == set(tagged)
    assert {r["path"] for r in results("--tag", "sea", "--tag", "fav")} == set(tagged[1:])
    assert {r["path"] for r in results("--path", "*/extra/*")} == {str(template.exact_copy), str(template.near_copy)}
    missing = runner.invoke(app, ["tag", str(template.photos / "nope.jpg"), "--add", "x", "-i", str(bundle)])
    assert missing.exit_code == 2 and "not in the index" in missing.stderr and "Traceback" not in missing.output
