"""Engine behaviour on real photos: incremental indexing, search, the ANN cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.options import EngineOptions
from retrieval import Engine, RetrievalError
from retrieval.engine import ANN_FILE

import retrieval.images.batches


def _class_of(path: str) -> str:
    return Path(path).parent.name


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(retrieval.images.batches, "load_image", boom)
    monkeypatch.setattr(retrieval.images.batches, "load_image_or_jpeg", boom)
    monkeypatch.setattr("retrieval.query.load_image", boom)


def test_index_then_query_finds_images_of_the_same_class(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    report = engine.index([sample_dir])
    assert (report.added, report.embedded, report.failed) == (50, 50, [])
    precisions = []
    for cls in sorted(os.listdir(sample_dir)):
        query = sorted((sample_dir / cls).iterdir())[0]
        hits = engine.search(query, k=4)
        assert str(query) not in {h.path for h in hits}, "an indexed query must not return itself"
        assert len(hits) == 4
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        precisions.append(sum(_class_of(h.path) == cls for h in hits) / 4)
    assert np.mean(precisions) >= 0.7, precisions


def test_unchanged_files_are_skipped_without_decoding(make_engine, sample_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    _forbid_decoding(monkeypatch)
    touched = next(sample_dir.rglob("*.jpg"))
    os.utime(touched, ns=(1_000_000_000, 1_000_000_000))  # new mtime, same bytes: hashed, not decoded
    report = engine.index([sample_dir])
    assert (report.added, report.updated, report.embedded, report.unchanged) == (0, 0, 0, 50)


def test_changed_file_is_reembedded_under_the_same_id(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    target = sorted((sample_dir / "chair").iterdir())[0]
    old = engine.catalog.rows_by_path([str(target)])[str(target)]
    old_vec = engine.vectors([old.id])[0]
    Image.open(sorted((sample_dir / "sunflower").iterdir())[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)
    report = engine.index([sample_dir])
    assert (report.updated, report.added, report.embedded) == (1, 0, 1)
    new = engine.catalog.rows_by_path([str(target)])[str(target)]
    assert new.id == old.id
    assert float(engine.vectors([new.id])[0] @ old_vec) < 0.9
    assert _class_of(engine.search(target, k=1)[0].path) == "sunflower"


def test_vanished_files_are_removed_and_never_returned(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    gone = sorted((sample_dir / "cup").iterdir())
    keep_query = gone[0]
    for p in gone[1:]:
        p.unlink()
    report = engine.index([sample_dir])
    assert report.removed == 4 and sorted(report.removed_paths) == sorted(map(str, gone[1:]))
    hits = engine.search(keep_query, k=49)
    assert len(hits) == 45  # 46 live images, minus the query itself
    assert not {str(p) for p in gone[1:]} & {h.path for h in hits}


def test_same_content_under_two_paths_reuses_the_vector(make_engine, sample_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    original = sorted((sample_dir / "dolphin").iterdir())[0]
    copy = sample_dir / "dolphin" / "copy of dolphin.jpg"
    shutil.copy(original, copy)
    _forbid_decoding(monkeypatch)
    report = engine.index([sample_dir])
    assert (report.added, report.duplicates, report.embedded) == (0, 1, 0)
    rows = engine.catalog.rows_by_path([str(original), str(copy)])
    a, b = rows[str(original)], rows[str(copy)]
    assert a.id != b.id and a.content_hash == b.content_hash
    np.testing.assert_array_equal(engine.vectors([a.id]), engine.vectors([b.id]))


def test_twins_in_one_run_are_embedded_once(make_engine, tmp_path: Path, sample_dir: Path) -> None:
    folder = tmp_path / "twins"
    folder.mkdir()
    src = sorted((sample_dir / "laptop").iterdir())[0]
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(src, folder / name)
    report = make_engine().index([folder])
    assert (report.added, report.embedded, report.duplicates) == (3, 1, 2)


def test_moved_file_keeps_its_id(make_engine, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    src = sorted((sample_dir / "elephant").iterdir())[0]
    old_id = engine.catalog.rows_by_path([str(src)])[str(src)].id
    dst = sample_dir / "renamed elephant.jpg"
    src.rename(dst)
    _forbid_decoding(monkeypatch)
    report = engine.index([sample_dir])
    assert (report.moved, report.removed, report.added, report.embedded) == (1, 0, 0, 0)
    assert engine.catalog.rows_by_path([str(dst)])[str(dst)].id == old_id


def test_missing_folder_is_an_error_and_removes_nothing(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    with pytest.raises(RetrievalError, match="folder not found"):
        engine.index([sample_dir / "no such folder"])
    assert len(engine) == 50


def test_indexing_another_folder_keeps_the_first(make_engine, sample_dir: Path, tmp_path: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir / "chair"])
    report = engine.index([sample_dir / "cup"])
    assert report.removed == 0 and len(engine) == 10


def test_queries_by_image_vector_and_several_combined(make_engine, sample_dir: Path, tmp_path: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    outside = tmp_path / "q.png"
    Image.open(sorted((sample_dir / "starfish").iterdir())[0]).save(outside)  # not indexed: embedded
    by_path = engine.search(outside, k=5)
    by_image = engine.search(Image.open(outside), k=5)
    assert [h.id for h in by_path] == [h.id for h in by_image]
    vec = engine.embed(outside)
    assert [h.id for h in engine.search(vec, k=5)] == [h.id for h in by_path]
    a, b = sorted((sample_dir / "butterfly").iterdir())[:2]
    both = engine.search([a, b], k=3)
    assert {str(a), str(b)}.isdisjoint(h.path for h in both)
    assert all(_class_of(h.path) == "butterfly" for h in both)


def test_similar_and_recommend(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    piano = engine.catalog.rows_by_path([str(p) for p in (sample_dir / "grand_piano").iterdir()])
    ids = sorted(r.id for r in piano.values())
    hits = engine.similar(ids[0], k=4)
    assert ids[0] not in {h.id for h in hits}
    assert sum(_class_of(h.path) == "grand_piano" for h in hits) >= 2  # chance: 0.3
    planes = engine.catalog.rows_by_path([str(p) for p in (sample_dir / "airplanes").iterdir()])
    plane_ids = sorted(r.id for r in planes.values())
    rec = engine.recommend(ids[:2], negative_ids=plane_ids[:1], k=10)
    assert not {*ids[:2], plane_ids[0]} & {h.id for h in rec}
    liked_only = engine.recommend(ids[:2], k=48)
    with_dislike = engine.recommend(ids[:2], negative_ids=plane_ids[:2], k=48)
    rank = lambda hits, i: [h.id for h in hits].index(i)  # noqa: E731
    assert rank(with_dislike, plane_ids[2]) > rank(liked_only, plane_ids[2])
    with pytest.raises(RetrievalError, match="no indexed image"):
        engine.similar(10_000)


def test_metadata_filter_still_returns_k(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    engine.add(sorted((sample_dir / "sunflower").iterdir()), metadata={"album": "garden"})
    engine.add(sorted(sample_dir.rglob("*.jpg")))
    assert len(engine) == 50
    query = sorted((sample_dir / "chair").iterdir())[0]
    hits = engine.search(query, k=5, where={"album": "garden"})
    assert len(hits) == 5 and all(_class_of(h.path) == "sunflower" for h in hits)
    assert all(h.metadata == {"album": "garden"} for h in hits)
    assert engine.search(query, k=5, where={"album": "nowhere"}) == []


def test_missing_or_stale_index_file_is_rebuilt_from_the_catalog(make_engine, extractor, sample_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine()
    engine.index([sample_dir / "chair"])
    stale = (engine.path / ANN_FILE).read_bytes()
    engine.index([sample_dir])
    query = sorted((sample_dir / "cup").iterdir())[0]
    expected = [h.id for h in engine.search(query, k=10)]
    engine.close()

    _forbid_decoding(monkeypatch)  # rebuilding must never re-read an image
    (engine.path / ANN_FILE).write_bytes(stale)  # an index saved at an older generation
    with Engine.open(engine.path, extractor=extractor) as reopened:
        assert [h.id for h in reopened.search(query, k=10)] == expected
    (engine.path / ANN_FILE).unlink()
    with Engine.open(engine.path, extractor=extractor) as reopened:
        assert [h.id for h in reopened.search(query, k=10)] == expected
    assert (engine.path / ANN_FILE).exists(), "the rebuilt index is saved again"
    (engine.path / ANN_FILE).write_bytes(b"garbage")
    with Engine.open(engine.path, extractor=extractor) as reopened:
        assert [h.id for h in reopened.search(query, k=10)] == expected


def test_remove_by_id_and_path(make_engine, sample_dir: Path) -> None:
    engine = make_engine()
    engine.index([sample_dir])
    a, b = sorted((sample_dir / "laptop").iterdir())[:2]
    a_id = engine.catalog.rows_by_path([str(a)])[str(a)].id
    assert engine.remove([a_id, str(b), 99_999]) == 2
    assert len(engine) == 48
    assert {str(a), str(b)}.isdisjoint(h.path for h in engine.search(a, k=48))


def test_open_missing_index_and_create_twice() -> None:
    from retrieval import IndexNotFoundError

    with pytest.raises(IndexNotFoundError, match="no index at"):
        Engine.open("/nonexistent/bundle")


def test_create_refuses_existing_bundle(make_engine, extractor) -> None:
    from retrieval import IndexExistsError

    engine = make_engine()
    with pytest.raises(IndexExistsError):
        Engine.create(engine.path, extractor)


@pytest.mark.parametrize("create", [{"options": EngineOptions(denoise="no/such/checkpoint")}, {"backend": "lsh"},
                                    {"backend": "hnsw", "backend_params": {"nope": 1}},
                                    {"extractor": {"pooling": "gam"}}, {"extractor": {"colour": "blue"}}])
def test_create_with_a_bad_argument_writes_nothing(tmp_path: Path, create: dict) -> None:
    """A typo must not leave an empty bundle behind that the next run would open."""
    with pytest.raises(RetrievalError):
        Engine.create(tmp_path / "bundle", **create)
    assert not (tmp_path / "bundle").exists()


_DIE_BEFORE_MANIFEST = """
import os, sys
from retrieval import Engine
from retrieval.catalog import Catalog
from retrieval.options import EngineOptions

real = Catalog.set_setting
def dying(self, key, value):
    if key == "manifest":
        os._exit(9)  # killed between writing the catalog and the extractor manifest
    real(self, key, value)
Catalog.set_setting = dying
Engine.create(sys.argv[1], backend="hnsw", options=EngineOptions(device="cpu"))
"""


def test_an_interrupted_creation_is_finished_by_the_next_create(tmp_path: Path, extractor, sample_dir: Path) -> None:
    import subprocess
    import sys

    bundle = tmp_path / "bundle"
    run = subprocess.run([sys.executable, "-c", _DIE_BEFORE_MANIFEST, str(bundle)], capture_output=True, timeout=300)
    assert run.returncode == 9, run.stderr
    assert (bundle / "catalog.sqlite").is_file()
    with pytest.raises(RetrievalError, match="interrupted.*again to finish"):
        Engine.open(bundle)
    with Engine.create(bundle, extractor, backend="hnsw", options=EngineOptions(device="cpu", workers=0)) as engine:
        assert engine.index([sample_dir / "cup"]).added == 5
        assert engine.info()["index"]["type"] == "hnsw"
    with Engine.open(bundle) as reopened:
        assert len(reopened) == 5
