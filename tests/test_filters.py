"""Search filters (retrieval/filters.py) on every backend: folder, glob, type, size, date
and tag filters return k results when k images match, all matching, close to brute
force over the matching set.

A synthetic bundle (stub extractor, vectors written straight into the catalog) with
varied folders, formats, sizes, dates and tags (tests/annhelpers.py).
"""

from __future__ import annotations

import datetime as dt
from fnmatch import fnmatch

import pytest

from retrieval.filters import Filter

from .annhelpers import SMALL_BACKENDS, Synthetic, noisy_queries, recall


@pytest.mark.parametrize("name", ["flat", "ivf", "hnsw", "annoy"])
def test_filters_return_k_matching_results(synthetic_2000: Synthetic, name: str) -> None:
    """Folder, glob, type, size, date and tag filters: k results when k images match,
    all matching, close to brute force over the matching set."""
    synthetic = synthetic_2000
    synthetic.engine.reindex(name, **SMALL_BACKENDS[name])
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
    queries = noisy_queries(synthetic, 6, seed=25)
    for where, matching in cases:
        assert 5 <= len(matching) < 2000, where
        for k in (10, len(matching)):
            assert recall(synthetic, queries, k=k, where=where, among=matching) >= 0.85, (where, k)
    synthetic.engine.tag(tagged[:3], remove=["blue"])
    assert {h.id for h in synthetic.engine.search(queries[0], k=100, where=Filter(tags=("blue",)))} == set(tagged[3:])


def _from_ns(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc)
