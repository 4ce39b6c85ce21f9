"""`Engine.index(..., ray=...)`: the embed phase as a Ray job gives what local indexing
gives (plan, vectors, failures, EXIF facts), resumes from a killed job's shards, and
survives an embed actor killed mid-job."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from retrieval import Engine
from retrieval.catalog import STATUS_OK
from retrieval.catalog.facts import PhotoFacts
from retrieval.cluster import ClusterError, RayJob
from retrieval.cluster.pipeline import embed_to_shards
from retrieval.cluster.shards import STAGING, Staging
from retrieval.cluster.workers import Embedder
from retrieval.errors import RetrievalError

from .. import badimages
from .helpers import stored

pytestmark = pytest.mark.usefixtures("local_ray")

FACTS = tuple(PhotoFacts.__dataclass_fields__)


def test_ray_indexes_as_local_does(make_engine: Callable[..., Engine], sample_dir: Path, bad_dir: Path) -> None:
    """Same rows, statuses, reasons, sizes, EXIF facts and (cosine >= 0.9999) vectors as the
    local loop; then a rerun plans as local: unchanged skipped, vanished removed, new embedded."""
    for bad in sorted(bad_dir.iterdir())[:3]:
        shutil.copyfile(bad, sample_dir / bad.name)
    local, on_ray = make_engine("local"), make_engine("ray")
    expected = local.index([sample_dir])
    got = on_ray.index([sample_dir], ray=RayJob())

    timings = {"seconds": 0, "images_per_second": 0, "stages": {}}  # the Ray job's stages are not the loop's
    assert got.to_dict() | timings == expected.to_dict() | timings
    want, have = stored(local, sample_dir), stored(on_ray, sample_dir)
    assert want.keys() == have.keys() and len(have) == 53
    for path, (row, vector) in want.items():
        other, other_vector = have[path]
        for name in ("status", "error", "content_hash", "size", "mtime_ns", "width", "height", "format", *FACTS):
            assert getattr(other, name) == getattr(row, name), (path, name)
        if vector is None:
            assert other_vector is None and row.status != STATUS_OK
        else:
            assert other_vector is not None and float(vector @ other_vector) >= 0.9999, path
    assert not (on_ray.path / STAGING).exists()

    gone = sample_dir / "cup" / sorted(os.listdir(sample_dir / "cup"))[0]
    gone.unlink()
    with Image.open(sample_dir / "chair" / sorted(os.listdir(sample_dir / "chair"))[0]) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(sample_dir / "flipped.png")
    again = on_ray.index([sample_dir], ray=RayJob())
    assert (again.removed_paths, again.added, again.embedded, again.unchanged) == ([str(gone)], 1, 1, 52)
    assert len(on_ray) == 50 and str(sample_dir / "flipped.png") in stored(on_ray, sample_dir)

    left = Staging(on_ray.path).new_job()  # a job killed after loading, before deleting its shards
    left.mkdir(parents=True)
    (left / "part-0.parquet").write_bytes(b"PAR1")
    idle = on_ray.index([sample_dir], ray=RayJob(address="ray://nowhere:1"))  # no job: Ray is not asked
    assert (idle.embedded, idle.unchanged) == (0, 53) and not left.parent.exists()  # 50 ok, 3 failed


def _rewrite_vector(shard: Path, path: str, vector: np.ndarray) -> None:
    """Give `path`'s row in `shard` another vector (to tell a reused row from a re-embedded one)."""
    table = pq.read_table(shard)
    rows = table.to_pylist()
    for row in rows:
        if row["path"] == path:
            row["vector"] = vector.tolist()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)


def test_killed_job_resumes_from_its_shards(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    """A job killed after some shards: the rerun loads their rows (unless the file changed
    since), embeds the rest, deletes a shard cut short, and stores every file once."""
    photos = badimages.copy_photos(tmp_path / "photos", 5, "cup") + \
        badimages.copy_photos(tmp_path / "photos", 5, "chair")
    engine = make_engine()
    done, later = [str(p) for p in photos[:4]], [str(p) for p in photos[4:]]
    staging = Staging(engine.path)
    killed = staging.new_job()
    embed_to_shards(pytest.importorskip("ray"), done, killed, RayJob(batch_size=2), engine.manifest,
                    engine.options, False)
    shards = sorted(killed.glob("*.parquet"))
    assert shards
    marker = np.zeros(engine.manifest.dim, np.float32)
    marker[0] = 1.0
    reused, changed = done[0], done[1]
    for shard in shards:
        _rewrite_vector(shard, reused, marker)
        _rewrite_vector(shard, changed, marker)
    shutil.copyfile(photos[4], changed)  # replaced after its shard: its row no longer stands
    cut = staging.new_job()
    cut.mkdir()
    (cut / "part-0.parquet").write_bytes(shards[0].read_bytes()[:-64])  # no footer: cut short by the kill

    report = engine.index([tmp_path / "photos"], ray=RayJob(batch_size=2))

    rows = stored(engine, tmp_path / "photos")
    assert sorted(rows) == sorted(done + later) and len(engine) == 10
    assert report.added == 10 and not report.failed
    reused_vector, changed_vector, source_vector = rows[reused][1], rows[changed][1], rows[str(photos[4])][1]
    assert reused_vector is not None and changed_vector is not None and source_vector is not None
    assert np.array_equal(reused_vector, marker)  # loaded from the killed job's shard
    assert not np.array_equal(changed_vector, marker)  # embedded again, from its new bytes
    assert rows[changed][0].content_hash == rows[str(photos[4])][0].content_hash
    assert float(changed_vector @ source_vector) >= 0.9999
    assert not staging.root.exists()  # the cut shard deleted, the rest loaded


class DyingEmbedder(Embedder):
    """An embed actor whose process kills itself (SIGKILL) on its first batch of the test:
    Ray must restart it and retry the batch. The marker file says it happened once."""

    marker: str = ""

    def __call__(self, batch: dict[str, Any]) -> Any:
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def test_killed_actor_is_retried(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    photos = badimages.copy_photos(tmp_path / "photos", 5, "dolphin")
    dying = type("Dying", (DyingEmbedder,), {"marker": str(tmp_path / "killed")})
    engine = make_engine()
    report = engine.index([tmp_path / "photos"], ray=RayJob(batch_size=2, embedder=dying))
    assert (tmp_path / "killed").exists()
    rows = stored(engine, tmp_path / "photos")
    assert sorted(rows) == sorted(str(p) for p in photos) and report.added == 5 and report.embedded == 5
    assert all(row.status == STATUS_OK and vector is not None for row, vector in rows.values())


class BrokenEmbedder(Embedder):
    """An embed actor whose model step raises: no retry can help."""

    def __call__(self, batch: dict[str, Any]) -> Any:
        raise RuntimeError("the model broke")


def test_failed_job_is_one_clear_error(make_engine: Callable[..., Engine], tmp_path: Path) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    photos = badimages.copy_photos(tmp_path / "photos", 2, "laptop")
    engine = make_engine()
    with pytest.raises(ClusterError, match="^the Ray job failed .*the model broke.*rerun it") as caught:
        engine.index([photos[0].parent], ray=RayJob(embedder=BrokenEmbedder))
    assert "\n" not in str(caught.value) and len(engine) == 0


def test_ray_refuses_an_index_with_local_features(tmp_path: Path, extractor: Any) -> None:
    """The Ray workers build the plain extractor only: said before anything is planned."""
    pytest.importorskip("cv2")
    photos = badimages.copy_photos(tmp_path / "photos", 1)
    with Engine.create(tmp_path / "bundle", extractor, local_features="sift") as engine:
        with pytest.raises(RetrievalError, match="local features"):
            engine.index([photos[0].parent], ray=RayJob())
        assert len(engine) == 0
