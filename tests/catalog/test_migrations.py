"""Schema migrations: a bundle from retrieve 0.1.0 opens, upgrades once, and loses nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import alembic.op
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event

from retrieval import Engine
from retrieval.catalog import Catalog
from retrieval.catalog.migrations import LEGACY_REVISION, alembic_config, head
from retrieval.catalog.models import Base
from retrieval.errors import IndexTooNewError, ReadOnlyIndexError, RetrievalError
from retrieval.extractors import Extractor
from retrieval.options import EngineOptions

from ..fixtures.make_bundle_v1 import IMAGES, REMOVED, draw, vector_digest
from .helpers import copy_v1, explain, finish, record, schema, start_workers, v1_schema


def _revision(path: Path) -> str | None:
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] if "alembic_version" in tables else None


def test_revision_0001_is_exactly_the_schema_release_0_1_0_wrote(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), LEGACY_REVISION)
    engine.dispose()
    assert schema(tmp_path / "c.sqlite") == v1_schema()


def test_the_models_describe_the_newest_revision(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.sqlite", create=True).close()
    engine = create_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_a_new_catalog_starts_at_the_newest_revision_with_its_settings(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    assert catalog.revision() == head() == _revision(tmp_path / "c.sqlite")
    assert (catalog.generation(), catalog.get_setting("schema_version")) == (0, "1")
    catalog.close()


def test_an_empty_file_is_a_catalog_whose_creation_was_interrupted(tmp_path: Path) -> None:
    (tmp_path / "c.sqlite").touch()  # what a crash before the first commit leaves
    catalog = Catalog(tmp_path / "c.sqlite")
    assert (catalog.revision(), catalog.generation()) == (head(), 0)
    catalog.close()


def test_a_database_of_something_else_is_refused_untouched(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "other.sqlite") as conn:
        conn.execute("CREATE TABLE photos (name TEXT)")
    with pytest.raises(RetrievalError, match="is not a retrieve catalog"):
        Catalog(tmp_path / "other.sqlite")
    assert {name for _type, name, _sql in schema(tmp_path / "other.sqlite")} == {"photos"}


def test_a_v1_bundle_opens_upgraded_and_intact(tmp_path: Path, extractor: Extractor) -> None:
    bundle = copy_v1(tmp_path / "bundle")
    expected = json.loads((bundle / "expected.json").read_text())
    assert _revision(bundle / "catalog.sqlite") is None  # 0.1.0 had no Alembic
    with Engine.open(bundle, extractor=extractor, options=EngineOptions(device="cpu", workers=0)) as engine:
        assert engine.catalog.revision() == head()
        assert engine.catalog.generation() == expected["generation"]
        rows = engine.catalog.rows_by_id(image["id"] for image in expected["images"])
        stored = engine.catalog.vectors(rows)
        for image in expected["images"]:
            row = rows[image["id"]]
            assert (Path(row.path).name, row.status, row.meta) == (image["name"], image["status"], image["meta"])
            assert (vector_digest(stored[row.id]) if row.id in stored else None) == image["vector"]
        for image in expected["images"]:
            if image["status"] == "ok":
                [hit] = engine.search(draw(image["name"]), k=1)
                assert (hit.id, Path(hit.path).name) == (image["id"], image["name"])
                assert hit.score == pytest.approx(1.0, abs=1e-3)
        assert REMOVED in IMAGES and all(Path(h.path).name != REMOVED for h in engine.search(draw(REMOVED), k=5))
        assert [h.metadata["sku"] for h in engine.search(draw("red_disc.png"), k=5, where={"in_stock": True})] == ["B-2"]
        assert [Path(r.path).name for r in engine.catalog.failed()] == ["broken.png"]
    assert _revision(bundle / "catalog.sqlite") == head()


def test_processes_opening_a_v1_bundle_together_upgrade_it_once(tmp_path: Path) -> None:
    bundle = copy_v1(tmp_path / "bundle")
    outputs = finish(start_workers("open", bundle / "catalog.sqlite", 4, tmp_path))
    assert [json.loads(out) for out, _ in outputs] == [{"revision": head()}] * 4
    assert sum(err.count("upgrading catalog") for _, err in outputs) == 1, outputs


def test_a_failed_upgrade_leaves_the_v1_bundle_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = copy_v1(tmp_path / "bundle")
    before = schema(bundle / "catalog.sqlite")

    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("interrupted mid-upgrade")

    monkeypatch.setattr(alembic.op, "drop_index", fail)  # 0002 has created its new indexes by then
    with pytest.raises(RuntimeError, match="interrupted"):
        Catalog(bundle / "catalog.sqlite")
    assert schema(bundle / "catalog.sqlite") == before
    assert _revision(bundle / "catalog.sqlite") is None  # not even stamped
    monkeypatch.undo()
    assert Catalog(bundle / "catalog.sqlite").revision() == head()


def test_a_bundle_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.sqlite", create=True).close()
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(IndexTooNewError, match=rf"index at {tmp_path} was written by a newer retrieve "
                                               r"\(schema 0099\); upgrade retrieve"):
        Catalog(tmp_path / "c.sqlite")


def test_a_read_only_v1_bundle_is_refused_not_half_upgraded(tmp_path: Path) -> None:
    bundle = copy_v1(tmp_path / "bundle")
    with pytest.raises(ReadOnlyIndexError, match="cannot be upgraded in place"):
        Catalog(bundle / "catalog.sqlite", read_only=True)
    assert _revision(bundle / "catalog.sqlite") is None
    assert schema(bundle / "catalog.sqlite") == v1_schema()


def test_downgrading_to_0001_gives_back_the_v1_schema(tmp_path: Path) -> None:
    bundle = copy_v1(tmp_path / "bundle")
    Catalog(bundle / "catalog.sqlite").close()
    engine = create_engine(f"sqlite:///{bundle / 'catalog.sqlite'}")
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), LEGACY_REVISION)
    engine.dispose()
    assert schema(bundle / "catalog.sqlite") == v1_schema()


def test_hot_queries_read_the_partial_indexes_of_0002(tmp_path: Path) -> None:
    """What 0002 is for: the hash lookup of every indexing pass, duplicate groups, counts
    and failed files read a partial index; on the v1 schema the hash lookup walked every
    ok row through the status index."""
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    catalog.apply([record(i) for i in range(20)] + [record(20, status="failed", vector=None)])
    calls = {
        "ix_images_ok_hash": [lambda: catalog.ok_ids_with_hash([f"hash{i}" for i in range(500)]),  # one batch
                              lambda: list(catalog.hash_groups()), lambda: catalog.ids_matching([])],
        "ix_images_failed": [lambda: catalog.failed()],
    }
    captured: list[tuple[str, object]] = []
    event.listen(catalog.engine, "before_cursor_execute",
                 lambda _conn, _cur, sql, params, _ctx, _many: captured.append((sql, params)))
    statements: dict[str, list[tuple[str, object]]] = {}
    for index, functions in calls.items():
        for call in functions:
            captured.clear()
            call()
            statements.setdefault(index, []).extend((q, p) for q, p in captured if q.lstrip().startswith("SELECT"))
    catalog.close()
    for index, selects in statements.items():
        plans = explain(tmp_path / "c.sqlite", selects)
        assert all(index in p and "TEMP B-TREE" not in p for p in plans), plans
    [v1_lookup] = explain(copy_v1(tmp_path / "v1") / "catalog.sqlite", statements["ix_images_ok_hash"][:1])
    assert "ix_images_status" in v1_lookup  # why 0002 exists
