"""The EXIF facts and exclusions of revision 0004: what the catalog keeps with each image, how
filters read them, and bundles written before them (issue 14)."""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from sqlalchemy import create_engine

from retrieval.catalog import STATUS_FAILED, Catalog
from retrieval.catalog.facts import PhotoFacts
from retrieval.catalog.migrations import alembic_config, head
from retrieval.errors import RetrievalError
from retrieval.filters import Filter

from .helpers import copy_v1, record, schema

PARIS = PhotoFacts(taken_at="2023-07-14T18:30:05", camera_make="FUJIFILM", camera_model="X100V", lens="23mm",
                   gps_lat=48.8584, gps_lon=2.2945, orientation=6)


def _matching(catalog: Catalog, **where: object) -> set[int]:
    return set(catalog.ids_matching(Filter(**where).conditions()).tolist())  # type: ignore[arg-type]


def test_facts_are_written_with_new_content_kept_on_a_move_and_cleared_on_failure(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    [i] = catalog.apply([record(1, photo=PARIS)])
    assert PhotoFacts.of_row(catalog.rows_by_id([i])[i]) == PARIS
    catalog.apply([record(1, id=i, path="/images/moved.jpg", vector=None)])  # a move keeps vector and facts
    assert PhotoFacts.of_row(catalog.rows_by_id([i])[i]) == PARIS
    catalog.apply([record(1, id=i, content_hash="other")])  # new content without EXIF
    assert PhotoFacts.of_row(catalog.rows_by_id([i])[i]) == PhotoFacts()
    catalog.apply([record(1, id=i, photo=PARIS)])
    catalog.apply([record(1, id=i, status=STATUS_FAILED, error="truncated", vector=None)])
    assert PhotoFacts.of_row(catalog.rows_by_id([i])[i]) == PhotoFacts()
    catalog.close()


def test_date_and_camera_filters(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    ids = catalog.apply([record(1, photo=PARIS),
                         record(2, photo=PhotoFacts(taken_at="2024-06-30T23:59:59", camera_model="Canon EOS R5")),
                         record(3)])  # no EXIF: never matches a date or a camera
    a, b, _ = ids
    assert _matching(catalog, taken_since=dt.datetime(2024, 1, 1)) == {b}
    assert _matching(catalog, taken_until=dt.datetime(2024, 6, 30, 23, 59, 59)) == {a, b}
    assert _matching(catalog, taken_until=dt.datetime(2023, 7, 14, 18, 30, 4)) == set()
    assert _matching(catalog, camera="fujifilm x100") == {a}  # make and model, any case
    assert _matching(catalog, camera="eos") == {b}
    assert _matching(catalog, camera="50%") == set()  # a part of the name, not a LIKE pattern
    with pytest.raises(RetrievalError, match="time zone"):
        _matching(catalog, taken_since=dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
    catalog.close()


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


@pytest.mark.parametrize(("lat", "lon", "km"), [(48.8584, 2.2945, 5.0), (-33.86, 151.21, 300.0), (64.1, -21.9, 50.0),
                                                (0.5, 179.9, 100.0)])  # across the antimeridian
def test_near_agrees_with_the_great_circle_distance(tmp_path: Path, lat: float, lon: float, km: float) -> None:
    """Points scattered to 1.5 x the radius: inside and outside as the great-circle
    distance says, except within 0.1% of the radius (the documented error)."""
    rng = np.random.default_rng(int(km))
    span = 1.5 * km / 111.2
    points = [(float(np.clip(lat + dy, -89.9, 89.9)), float((lon + dx / max(math.cos(math.radians(lat)), 0.2) + 540)
                                                             % 360 - 180))
              for dy, dx in rng.uniform(-span, span, (400, 2))]
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    ids = catalog.apply([record(n, photo=PhotoFacts(gps_lat=p[0], gps_lon=p[1])) for n, p in enumerate(points)])
    found = _matching(catalog, near=(lat, lon, km))
    distances = [_haversine(lat, lon, *p) for p in points]
    inside = {i for i, d in zip(ids, distances) if d <= km * 0.999}
    outside = {i for i, d in zip(ids, distances) if d > km * 1.001}
    assert inside and outside and inside <= found and not (found & outside)
    catalog.close()


def test_near_refuses_impossible_places(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    for near in ((91.0, 0.0, 1.0), (0.0, 181.0, 1.0), (0.0, 0.0, 0.0)):
        with pytest.raises(RetrievalError, match="latitude -90..90"):
            _matching(catalog, near=near)
    catalog.close()


def test_exclusions_are_recorded_once_and_forgotten(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    catalog.change_exclusions(add=["*/drafts/*", "/a/b.jpg", "*/drafts/*"])
    assert catalog.exclusions() == ["*/drafts/*", "/a/b.jpg"]
    assert catalog.change_exclusions(drop=["/a/b.jpg", "/not/there"]) == ["/a/b.jpg"]
    assert catalog.exclusions() == ["*/drafts/*"]
    catalog.close()


# ---------------------------------------------------------------- bundles from before 0004


def test_a_v1_bundle_gains_empty_facts_and_no_exclusions(tmp_path: Path) -> None:
    bundle = copy_v1(tmp_path / "bundle")
    catalog = Catalog(bundle / "catalog.sqlite")
    assert catalog.revision() == head() == "0004"
    rows = catalog.rows_by_id(catalog.ids_matching([]).tolist())
    assert rows and all(PhotoFacts.of_row(r) == PhotoFacts() for r in rows.values())
    assert catalog.exclusions() == [] and _matching(catalog, camera="x") == set()
    catalog.close()


def test_a_0003_catalog_upgrades_with_its_rows_and_downgrades_back(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
    engine.dispose()
    at_0003 = schema(path)
    with sqlite3.connect(path) as conn:  # a row as release 0003 wrote it
        conn.execute("INSERT INTO images (path, content_hash, size, mtime_ns, status, meta, gen, added_at, updated_at)"
                     " VALUES ('/p/a.jpg', 'h', 1, 1, 'ok', '{\"sku\": \"A\"}', 1, 0, 0)")
    catalog = Catalog(path)
    [row] = catalog.rows_by_path(["/p/a.jpg"]).values()
    assert (row.meta, PhotoFacts.of_row(row)) == ({"sku": "A"}, PhotoFacts())
    catalog.close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0003")
    engine.dispose()
    assert schema(path) == at_0003  # the partial indexes of 0002 survive the round trip
