"""One batch written in bulk (Catalog.apply): what each record keeps, what it replaces, and
the order that lets a batch move a file away and index a new one at its old path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from retrieval.catalog import STATUS_FAILED, Catalog
from retrieval.catalog.facts import PhotoFacts

from .helpers import record


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.sqlite", create=True)


def test_ids_come_back_in_record_order_for_new_and_existing_rows(catalog: Catalog) -> None:
    first = catalog.apply([record(n) for n in range(5)])
    assert len(set(first)) == 5
    mixed = [record(10), replace(record(3), id=first[3], content_hash="new3"), record(11),
             replace(record(1), id=first[1])]
    ids = catalog.apply(mixed)
    assert ids[1] == first[3] and ids[3] == first[1]
    assert ids[0] not in first and ids[2] not in first and ids[0] != ids[2]
    rows = catalog.rows_by_id(ids)
    assert [rows[i].path for i in ids] == [r.path for r in mixed]
    assert rows[first[3]].content_hash == "new3"


def test_metadata_none_keeps_the_stored_metadata_and_a_dict_replaces_it(catalog: Catalog) -> None:
    a, b = catalog.apply([record(1, metadata={"sku": "A"}), record(2, metadata={"sku": "B"})])
    catalog.apply([replace(record(1), id=a, metadata=None), replace(record(2), id=b, metadata={"price": 3})])
    rows = catalog.rows_by_id([a, b])
    assert rows[a].meta == {"sku": "A"}
    assert rows[b].meta == {"price": 3}


def test_a_move_keeps_dimensions_facts_and_vector_while_new_content_replaces_them(catalog: Catalog) -> None:
    facts = PhotoFacts(camera_make="Fuji", orientation=6)
    a, b = catalog.apply([record(1, width=40, height=30, format="JPEG", photo=facts),
                          record(2, width=40, height=30, format="JPEG", photo=facts)])
    stored = catalog.vectors([a])[a]
    moved = replace(record(1), path="/elsewhere/1.jpg", id=a, vector=None, width=None, height=None, photo=None)
    fresh = record(2, id=b, width=8, height=6, format="PNG", photo=None,
                   vector=np.ones(8, np.float32), content_hash="other")
    catalog.apply([moved, fresh])
    rows = catalog.rows_by_id([a, b])
    assert (rows[a].path, rows[a].width, rows[a].camera_make, rows[a].orientation) == \
        ("/elsewhere/1.jpg", 40, "Fuji", 6)
    np.testing.assert_array_equal(catalog.vectors([a])[a], stored)
    assert (rows[b].width, rows[b].format, rows[b].camera_make) == (8, "PNG", None)
    np.testing.assert_array_equal(catalog.vectors([b])[b], np.ones(8, np.float32))


def test_a_path_freed_by_a_move_can_take_a_new_file_in_the_same_batch(catalog: Catalog) -> None:
    (a,) = catalog.apply([record(1)])
    moved = replace(record(1), path="/images/renamed.jpg", id=a, vector=None)
    newcomer = record(1, content_hash="a new photo at the old path")
    ids = catalog.apply([newcomer, moved])  # the new file comes first in the batch
    rows = catalog.rows_by_path(["/images/1.jpg", "/images/renamed.jpg"])
    assert rows["/images/renamed.jpg"].id == a == ids[1]
    assert rows["/images/1.jpg"].id == ids[0] != a
    assert rows["/images/1.jpg"].content_hash == "a new photo at the old path"


def test_a_failure_drops_vector_and_local_features_and_a_record_of_a_vanished_id_is_new(catalog: Catalog) -> None:
    a, b = catalog.apply([record(1, local=b"features"), record(2)])
    catalog.apply(removals=[b])
    failed = replace(record(1), id=a, status=STATUS_FAILED, error="truncated", vector=None)
    ids = catalog.apply([failed, replace(record(2), id=b)])
    assert ids[0] == a and ids[1] != b
    assert catalog.vectors([a]) == {} and catalog.local_features([a]) == {}
    assert catalog.rows_by_id([a])[a].error == "truncated"
    assert set(catalog.vectors([ids[1]])) == {ids[1]}
    changes = catalog.changes_since(0)
    assert b not in changes.ids and ids[1] in changes.ids


def test_new_content_without_local_features_drops_the_stored_ones(catalog: Catalog) -> None:
    a, b = catalog.apply([record(1, local=b"old"), record(2, local=b"old")])
    catalog.apply([record(1, id=a, content_hash="x", local=None), record(2, id=b, content_hash="y", local=b"new")])
    assert catalog.local_features([a, b]) == {b: b"new"}


def test_a_batch_larger_than_one_in_list_is_written_whole(catalog: Catalog) -> None:
    ids = catalog.apply([record(n, dim=2) for n in range(12_000)])
    assert len(set(ids)) == 12_000
    catalog.apply(removals=ids[:11_000])
    assert catalog.counts()["ok"] == 1_000
    assert len(catalog.changes_since(1).removed) == 11_000


def _replay(index: dict[int, bytes], changes) -> None:
    """Apply Changes to a plain {id: vector bytes} index the way a cache does: remove, then add."""
    for i in [*changes.removed.tolist(), *changes.ids.tolist()]:
        index.pop(int(i), None)
    for i, vec in zip(changes.ids.tolist(), changes.vectors if changes.vectors is not None else []):
        index[int(i)] = np.asarray(vec, np.float32).tobytes()


def test_the_writer_hands_its_batch_over_and_it_equals_what_a_reader_reads_back(tmp_path: Path) -> None:
    writer = Catalog(tmp_path / "catalog.sqlite", create=True)
    reader = Catalog(tmp_path / "catalog.sqlite")  # another object: reads every change back from SQLite
    handed: dict[int, bytes] = {}
    read: dict[int, bytes] = {}
    gen = writer.generation()
    ids = writer.apply([record(n) for n in range(6)])
    batches = [
        [replace(record(1), id=ids[1], vector=np.full(8, 2, np.float32), content_hash="new1"), record(7)],
        [replace(record(2), id=ids[2], status=STATUS_FAILED, error="broken", vector=None)],
        [replace(record(3), path="/moved/3.jpg", id=ids[3], vector=None)],  # a move: id and vector stay
        [],  # removals only (below)
    ]
    removals = [[], [], [], [ids[4], ids[0]]]
    written: list[list[int]] = []
    for step, (records, gone) in enumerate([([], [])] + list(zip(batches, removals))):
        if step:
            written.append(writer.apply(records, removals=gone))
        handed_changes = writer.changes_since(gen)
        assert handed_changes is writer._last_write, "the writer's own last batch comes from memory"
        _replay(handed, handed_changes)
        _replay(read, reader.changes_since(gen))
        assert handed == read, f"step {step}"
        gen = handed_changes.generation
    assert set(handed) == {ids[1], ids[3], ids[5], written[0][1]}  # 2 failed, 0 and 4 removed, 7 added
    assert handed[ids[1]] == np.full(8, 2, np.float32).tobytes()


def test_a_commit_by_someone_else_makes_the_writer_read_back(tmp_path: Path) -> None:
    writer = Catalog(tmp_path / "catalog.sqlite", create=True)
    other = Catalog(tmp_path / "catalog.sqlite")
    gen = writer.generation()
    writer.apply([record(1)])
    other.apply([record(2)])  # commits after the writer's batch
    changes = writer.changes_since(gen)
    assert changes is not writer._last_write
    assert len(changes.ids) == 2 and changes.generation == gen + 2
