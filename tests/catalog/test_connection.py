"""How the catalog file is opened: any path, read-only when it must be, full disks, many processes."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from retrieval import Engine
from retrieval.catalog import Catalog, connection
from retrieval.errors import DiskFullError, IndexBusyError, ReadOnlyIndexError
from retrieval.options import EngineOptions

from .helpers import copy_v1, finish, record, start_workers

# SQLAlchemy's "sqlite:///<path>" decoded %41 to "A" and cut the path at "?" and "#".
ODD_NAMES = ["a%41b", "x?mode=ro", "h#ash", "with  spaces ", "ünïcødé 写真", "50%?#&=;x", "%2e%2e"]
# Run "$@" with the folder "$0" mounted read-only, in a private mount namespace.
READ_ONLY_MOUNT = ("unshare", "-m", "sh", "-c",
                   'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"')


@pytest.mark.parametrize("name", ODD_NAMES)
def test_the_index_folder_is_a_path_never_a_url(tmp_path: Path, name: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    catalog = Catalog(folder / "catalog.sqlite", create=True)
    [image_id] = catalog.apply([record(1)])
    catalog.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert sorted(p.name for p in folder.iterdir()) == ["catalog.sqlite"]
    for read_only in (False, True):
        again = Catalog(folder / "catalog.sqlite", read_only=read_only)
        assert list(again.rows_by_id([image_id])) == [image_id]
        again.close()


def _writes(catalog: Catalog) -> dict[str, Callable[[], object]]:
    return {
        "apply": lambda: catalog.apply([record(9)]),
        "remove": lambda: catalog.apply(removals=[1]),
        "set_metadata": lambda: catalog.set_metadata(1, {"a": 1}),
        "update_tags": lambda: catalog.update_tags([1], add=["x"], remove=[]),
        "set_setting": lambda: catalog.set_setting("k", "v"),
    }


def test_an_unwritable_folder_is_opened_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    catalog.apply([record(1, metadata={"a": 0})])
    catalog.close()
    real_access = os.access
    # Tests run as root, whom permissions do not stop: the folder looks unwritable instead.
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    reader = Catalog(tmp_path / "c.sqlite")
    assert reader.read_only
    assert reader.rows_by_id([1])[1].meta == {"a": 0}
    for write in _writes(reader).values():
        with pytest.raises(ReadOnlyIndexError, match="read-only"):
            write()
    with pytest.raises(OperationalError, match="readonly database"), reader.engine.begin() as conn:
        conn.execute(text("UPDATE settings SET value = 'x' WHERE key = 'generation'"))  # SQLite's mode=ro
    reader.close()
    with pytest.raises(ReadOnlyIndexError, match="folder is read-only"):
        Catalog(tmp_path / "new.sqlite", create=True)
    monkeypatch.undo()
    assert Catalog(tmp_path / "c.sqlite").generation() == 1
    assert not (tmp_path / "new.sqlite").exists()


def _read_only_mounts_work(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*READ_ONLY_MOUNT, str(folder), "touch", str(folder / "probe")],
                           capture_output=True, text=True)
    return "Read-only file system" in probe.stderr


def test_a_read_only_filesystem_is_read_without_writing(tmp_path: Path) -> None:
    """A real read-only bind mount: SQLite cannot even create the -shm file there."""
    current, old, crashed = tmp_path / "current", copy_v1(tmp_path / "old"), tmp_path / "crashed"
    current.mkdir()
    crashed.mkdir()
    if not _read_only_mounts_work(current):
        pytest.skip("needs root and `unshare -m` to make a read-only mount")
    catalog = Catalog(current / "catalog.sqlite", create=True)
    catalog.apply([record(1), record(2, status="failed", vector=None)])
    for name in ("catalog.sqlite", "catalog.sqlite-wal"):  # a copy taken while it was open: WAL not merged
        shutil.copy(current / name, crashed / name)
    catalog.close()
    results = {}
    for bundle in (current, old, crashed):
        workers = start_workers("read", bundle / "catalog.sqlite", 1, tmp_path, wrapper=(*READ_ONLY_MOUNT, str(bundle)))
        [(out, _err)] = finish(workers)
        results[bundle.name] = json.loads(out)
    assert results["current"] == {"read_only": True, "counts": {"ok": 1, "failed": 1},
                                  "write_error": "ReadOnlyIndexError", "message": results["current"]["message"]}
    assert results["old"]["open_error"] == "ReadOnlyIndexError"
    assert "cannot be upgraded in place" in results["old"]["message"]
    assert results["crashed"]["open_error"] == "ReadOnlyIndexError"
    assert "never merged" in results["crashed"]["message"]
    assert sorted(p.name for p in current.iterdir()) == ["catalog.sqlite"]


def test_a_writer_kept_waiting_too_long_gets_index_busy_not_database_is_locked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_S", 0.2)
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    [image_id] = catalog.apply([record(1)])
    other = sqlite3.connect(tmp_path / "c.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
    for write in _writes(catalog).values():
        with pytest.raises(IndexBusyError, match="locked by another process.*try again later"):
            write()
    other.execute("ROLLBACK")
    other.close()
    catalog.set_metadata(image_id, {"a": 1})
    assert catalog.rows_by_id([image_id])[image_id].meta == {"a": 1}
    catalog.close()


def _fill_up(catalog: Catalog, spare_pages: int) -> None:
    """From now on the database file may grow by `spare_pages` pages only (a disk filling up)."""
    with catalog.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
    event.listen(catalog.engine, "connect",
                 lambda dbapi, _record: dbapi.execute(f"PRAGMA max_page_count = {pages + spare_pages}"))
    catalog.engine.dispose()  # the pooled connections predate the limit


def test_a_full_disk_fails_the_batch_in_one_line_and_keeps_the_rest(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    catalog.apply([record(i, dim=1024) for i in range(5)])
    _fill_up(catalog, spare_pages=30)
    written = 5
    with pytest.raises(DiskFullError) as raised:
        for batch in range(100):
            catalog.apply([record(100 + 3 * batch + i, dim=1024) for i in range(3)])
            written += 3
    assert "\n" not in str(raised.value) and "free some space" in str(raised.value)
    catalog.close()
    after = Catalog(tmp_path / "c.sqlite")
    assert after.counts()["ok"] == written > 5
    assert after.generation() == 1 + (written - 5) // 3
    vectors = after.vectors(range(1, written + 1))
    assert len(vectors) == written
    np.testing.assert_array_equal(vectors[1], record(0, dim=1024).vector)
    after.apply([record(999)])  # with room again, writing goes on
    after.close()


def test_connections_racing_to_make_a_new_catalog_wal_all_succeed(tmp_path: Path) -> None:
    """Three writers' first connections to one new file at the same moment: each switches it
    to WAL, and SQLite answered the loser of that deadlock "database is locked" at once
    (without waiting; 70 of 300 such races, and the cause of the flaky process test below)."""
    for attempt in range(60):
        path = tmp_path / f"{attempt}.sqlite"
        start = threading.Barrier(3)
        errors: list[BaseException] = []

        def open_writer(path: Path = path, start: threading.Barrier = start,
                        errors: list[BaseException] = errors) -> None:
            engine = connection.sqlite_engine(path, connection.MODE_WRITE)
            try:
                start.wait()
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            except BaseException as e:  # noqa: BLE001 - collected for the assertion below
                errors.append(e)
            finally:
                engine.dispose()

        threads = [threading.Thread(target=open_writer) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, f"attempt {attempt}: {errors[0]!r}"


def test_processes_writing_one_new_catalog_never_see_database_is_locked(tmp_path: Path) -> None:
    """Each worker creates the same catalog, then adds, tags and sets metadata in a loop.

    Before, transactions began as readers and failed with "database is locked" when
    they upgraded to writers while another process wrote.
    """
    workers = start_workers("hammer", tmp_path / "c.sqlite", 3, tmp_path, seconds=3)
    writes = {f"w{i}": json.loads(out)["writes"] for i, (out, _err) in enumerate(finish(workers))}
    assert all(n > 0 for n in writes.values()), writes
    catalog = Catalog(tmp_path / "c.sqlite")
    rows = catalog.rows_under(["/"])
    assert len(rows) == sum(writes.values())
    for row in rows.values():
        assert row.meta == {"worker": row.path.split("/")[1], "n": row.mtime_ns, "tags": [row.path.split("/")[1]]}
    assert catalog.generation() == sum(writes.values())
    catalog.close()


def test_indexing_onto_a_full_disk_stops_with_one_line_and_keeps_what_was_indexed(
        make_engine: Callable[..., Engine], sample_dir: Path) -> None:
    photos = sorted(sample_dir.rglob("*.jpg"))
    engine = make_engine()
    engine.add(photos[:3])
    _fill_up(engine.catalog, spare_pages=2)  # less than one batch of vectors
    with pytest.raises(DiskFullError) as raised:
        engine.add(photos[3:8])
    assert "\n" not in str(raised.value)
    path = engine.path
    engine.close()
    with Engine.open(path, options=EngineOptions(device="cpu", workers=0)) as again:
        assert len(again) == 3
        assert sorted(again.catalog.rows_under([str(sample_dir)])) == [str(p) for p in photos[:3]]
        assert [h.path for h in again.search(again.catalog.vectors([1])[1], k=1)] == [str(photos[0])]
