"""The stored vectors for other programs: :meth:`Engine.iter_vectors` block by block from
one snapshot, and `retrieve export-vectors` as npy (a folder) or parquet (one file), whole
or not at all."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from retrieval import Engine
from retrieval.cli import vectors as vectors_cli
from retrieval.errors import BadQueryError

from .conftest import invoke, one_error_line


@pytest.fixture()
def bundle(make_engine: Callable[..., Engine], sample_dir: Path) -> Path:
    """7 photos, one with user metadata (the 7 make blocks of 3 uneven)."""
    for extra in sorted((sample_dir / "chair").iterdir())[2:]:
        extra.unlink()
    engine = make_engine()
    engine.index([sample_dir / "cup", sample_dir / "chair"])
    first = min(info.id for info in engine.browse().images)
    engine.set_metadata(first, {"sku": "A-1", "price": 9.5, "note": "café"})
    engine.close()
    return engine.path


def _truth(bundle: Path) -> tuple[list[int], np.ndarray, dict[int, tuple[str, dict]]]:
    with Engine.open(bundle) as engine:
        infos = engine.browse().images
        ids = [i.id for i in infos]
        return ids, engine.vectors(ids), {i.id: (i.path, i.metadata) for i in infos}


def test_iter_vectors_gives_every_id_and_vector_in_blocks(bundle: Path) -> None:
    ids, vectors, _ = _truth(bundle)
    with Engine.open(bundle) as engine:
        blocks = list(engine.iter_vectors(3))
        with pytest.raises(BadQueryError, match="positive integer"):
            engine.iter_vectors(0)
    assert [len(b) for b, _ in blocks] == [3, 3, 1]
    assert np.concatenate([b for b, _ in blocks]).tolist() == sorted(ids)
    assert np.array_equal(np.concatenate([v for _, v in blocks]), vectors[np.argsort(ids)])


def test_iter_vectors_reads_one_snapshot_while_another_process_removes(bundle: Path) -> None:
    ids, _, _ = _truth(bundle)
    last = max(ids)
    with Engine.open(bundle) as reader, Engine.open(bundle) as writer:
        blocks = reader.iter_vectors(3)
        first = next(blocks)
        assert writer.remove([last]) == 1
        infos = reader.image_infos([last])  # between blocks: in the iteration's snapshot
        rest = [b for b, _ in blocks]
    assert np.concatenate([first[0], *rest]).tolist() == sorted(ids) and last in infos
    with Engine.open(bundle) as engine:
        assert last not in np.concatenate([b for b, _ in engine.iter_vectors()]).tolist()


def test_export_npy_writes_vectors_ids_and_records_in_one_order(bundle: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors_cli, "BLOCK", 3)  # several blocks into the mapped arrays
    ids, vectors, facts = _truth(bundle)
    out = tmp_path / "export"
    result = invoke("export-vectors", "-i", str(bundle), "--out", str(out), "--format", "npy", "-q", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"out": str(out), "format": "npy", "count": 7, "dim": vectors.shape[1]}
    got_ids, got_vectors = np.load(out / "ids.npy"), np.load(out / "vectors.npy")
    records = [json.loads(line) for line in (out / "images.jsonl").read_text(encoding="utf-8").splitlines()]
    assert got_ids.dtype == np.int64 and got_vectors.dtype == np.float32
    assert got_ids.tolist() == sorted(ids) == [r["id"] for r in records]
    assert np.array_equal(got_vectors, vectors[np.argsort(ids)])
    assert [(r["path"], r["metadata"]) for r in records] == [facts[i] for i in sorted(ids)]
    assert {"sku": "A-1", "price": 9.5, "note": "café"} in [r["metadata"] for r in records]
    assert all(r["width"] and r["height"] and r["size"] > 0 for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "export", "photos"]  # no .partial left


def test_export_parquet_has_a_row_per_image_with_its_vector(bundle: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setattr(vectors_cli, "BLOCK", 3)
    ids, vectors, facts = _truth(bundle)
    out = tmp_path / "vectors.parquet"
    result = invoke("export-vectors", "-i", str(bundle), "-o", str(out), "--format", "parquet", "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"exported 7 vectors ({vectors.shape[1]}-d) to {out}"
    assert pq.ParquetFile(out).metadata.num_row_groups == 3
    table = pq.read_table(out).to_pylist()
    assert [r["id"] for r in table] == sorted(ids)
    assert np.array_equal(np.array([r["vector"] for r in table], np.float32), vectors[np.argsort(ids)])
    assert [(r["path"], json.loads(r["metadata"])) for r in table] == [facts[i] for i in sorted(ids)]


def test_parquet_without_pyarrow_is_a_clear_error(bundle: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    out = tmp_path / "v.parquet"
    line = one_error_line(invoke("export-vectors", "-i", str(bundle), "-o", str(out), "--format", "parquet"))
    assert "retrieve[parquet]" in line and "--format npy" in line and not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "csv"], "choose npy, parquet"),
    (["--out", "EXISTING"], "exists"),
])
def test_bad_format_or_existing_out_is_one_line(bundle: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path) if a == "EXISTING" else a for a in args]
    extra = [] if "--out" in args else ["--out", str(tmp_path / "new")]
    assert message in one_error_line(invoke("export-vectors", "-i", str(bundle), *args, *extra))


def test_an_interrupted_export_leaves_nothing(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors_cli, "BLOCK", 3)
    calls = []
    real = Engine.image_infos

    def interrupted(self: Engine, ids: list[int]) -> dict:
        calls.append(ids)
        if len(calls) == 2:  # after the first block is written
            raise KeyboardInterrupt
        return real(self, ids)

    monkeypatch.setattr(Engine, "image_infos", interrupted)
    out = tmp_path / "export"
    result = invoke("export-vectors", "-i", str(bundle), "-o", str(out), "-q")
    assert result.exit_code == 130 and len(calls) == 2
    assert not out.exists() and not (tmp_path / "export.partial").exists()
