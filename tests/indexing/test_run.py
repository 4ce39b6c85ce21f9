"""What an indexing run stores: the hash of the bytes it decoded, and what discovery skipped.

Before (issue 12), the plan hashed a file and a worker decoded it later: a file replaced
in between was stored with the old content's hash and the new content's vector, and a
same-size replacement that kept the old mtime never healed.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrieval.indexing.run
from retrieval.images.files import discover, file_digest
from retrieval.indexing.plan import plan_sync
from retrieval.indexing.run import execute

from ..badimages import sample_photos


def _padded(jpeg: bytes, size: int) -> bytes:
    """The same JPEG grown to `size` bytes by comment segments after its start marker:
    every decoder skips them, and it still ends with its end marker (the device path)."""
    segments, pad = [], size - len(jpeg)
    while pad:
        take = min(pad, 65537)
        take -= 4 if pad - take in (1, 2, 3) else 0
        segments.append(b"\xff\xfe" + (take - 2).to_bytes(2, "big") + bytes(take - 4))
        pad -= take
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_a_file_replaced_after_planning_is_stored_with_the_hash_of_what_was_decoded(
        make_engine, extractor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decode: str) -> None:
    old, new = (p.read_bytes() for p in sample_photos(2, "airplanes"))
    size = max(len(old), len(new)) + 64
    old, new = _padded(old, size), _padded(new, size)
    root = tmp_path / "photos"
    root.mkdir()
    victim, twin = root / "a.jpg", root / "b-twin.jpg"  # the same content: one embed for both
    for path in (victim, twin):
        path.write_bytes(old)
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    real_execute = retrieval.indexing.run.execute

    def replace_then_execute(*args: object, **kwargs: object) -> object:
        victim.write_bytes(new)  # same size, and the mtime the plan saw: only the bytes differ
        os.utime(victim, ns=(1_000_000_000, 1_000_000_000))
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(retrieval.indexing.run, "execute", replace_then_execute)
    engine = make_engine(decode=decode, batch_size=4)
    report = engine.index([root])
    rows = engine.catalog.rows_by_path([str(victim), str(twin)])
    assert rows[str(victim)].content_hash == file_digest(victim)  # before: the replaced content's hash
    assert str(twin) not in rows  # its content was not what was read: left for the next run
    assert (report.added, report.failed) == (1, [])
    stored = engine.vectors([rows[str(victim)].id])[0]
    expected = extractor.embed_images([Image.open(io.BytesIO(new)).convert("RGB")])[0]
    assert float(stored @ expected) > 0.98  # the vector is the new content's too

    monkeypatch.setattr(retrieval.indexing.run, "execute", real_execute)
    again = engine.index([root])
    assert (again.unchanged, again.added, again.embedded, again.failed) == (1, 1, 1, [])
    rows = engine.catalog.rows_by_path([str(victim), str(twin)])
    assert rows[str(twin)].content_hash == file_digest(twin) != rows[str(victim)].content_hash
    vectors = engine.vectors([rows[str(victim)].id, rows[str(twin)].id])
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_what_discovery_skips_is_carried_to_the_report(make_engine, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for p in sample_photos(2):
        shutil.copyfile(p, root / p.name)
    os.symlink("/", root / "machine")
    skipped: list[tuple[str, str]] = []
    files = [str(p) for p in discover([root], on_skip=lambda path, why: skipped.append((path, why)))]
    engine = make_engine()
    plan = plan_sync(engine.catalog, files, {}, sweep=False, skipped=skipped)
    report = execute(plan, engine.catalog, lambda: engine.embedder("index"), lambda: None, batch_size=4, workers=0)
    assert report.added == 2 and report.skipped == [(str(root / "machine"), skipped[0][1])]
    assert "outside the indexed folders" in skipped[0][1]
    summary = report.to_dict()
    assert summary["skipped"] == 1
    assert summary["skipped_files"] == [{"path": str(root / "machine"), "reason": skipped[0][1]}]
