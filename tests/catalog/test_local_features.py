"""Local features live with their image's row: written in its transaction, kept on a move,
dropped when the content changes, fails or is removed, and a bundle of the previous
schema gains the (empty) table when it is opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from retrieval.catalog import Catalog

from .helpers import copy_v1, record


def test_local_features_follow_their_image_through_moves_edits_failures_and_removals(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    a, b, c, d = catalog.apply([record(1, local=b"one"), record(2, local=b"two"), record(3), record(4, local=b"four")])
    assert catalog.local_features([a, b, c, d, 999]) == {a: b"one", b: b"two", d: b"four"}

    moved, edited, failed = catalog.apply([
        record(1, id=a, path="/images/moved.jpg", vector=None),  # a move keeps vector and features
        record(2, id=b, content_hash="new", local=None),  # new content without features: stale ones go
        record(4, id=d, status="failed", error="broken", vector=None),
    ])
    assert (moved, edited, failed) == (a, b, d)
    assert catalog.local_features([a, b, d]) == {a: b"one"}

    catalog.apply([record(2, id=b, content_hash="newer", local=b"two again")])
    catalog.apply(removals=[a])
    assert catalog.local_features([a, b]) == {b: b"two again"}
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:  # nothing orphaned behind the API
        assert conn.execute("SELECT image_id FROM local_features").fetchall() == [(b,)]
    catalog.close()


def test_iter_local_features_reads_every_row_in_id_order_across_blocks(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    ids = catalog.apply([record(n, local=f"f{n}".encode() if n % 3 else None) for n in range(1, 12)])
    blocks = list(catalog.iter_local_features(batch=3))
    assert all(len(block) <= 3 for block in blocks)
    assert [pair for block in blocks for pair in block] == \
        [(i, f"f{n}".encode()) for n, i in zip(range(1, 12), ids) if n % 3]
    catalog.close()


def test_a_bundle_of_the_previous_schema_gains_an_empty_local_features_table(tmp_path: Path) -> None:
    bundle = copy_v1(tmp_path / "b")
    catalog = Catalog(bundle / "catalog.sqlite")
    assert list(catalog.iter_local_features()) == []
    with sqlite3.connect(bundle / "catalog.sqlite") as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(local_features)")]
    assert columns == ["image_id", "data"]
    catalog.close()
