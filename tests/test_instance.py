"""The same-object search through the Engine: an index with local features finds the poster
a warped, relit photo shows, says where it is in the photo, forgets removed images, and
falls back to the global ranking where local features cannot help."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")

from retrieval import Engine  # noqa: E402
from retrieval.errors import BadQueryError, RetrievalError, UnknownNameError  # noqa: E402
from retrieval.extractors import Extractor  # noqa: E402
from retrieval.options import EngineOptions  # noqa: E402

from .local.scenes import homography, mapped_corners, photo, poster  # noqa: E402

POSTERS = 24
SIZE = (480, 360)


@pytest.fixture(scope="module")
def posters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("posters")
    for i in range(POSTERS):
        Image.fromarray(poster(i, SIZE)).save(folder / f"poster_{i:02d}.jpg", quality=92)
    return folder


def _photo_of(i: int, folder: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A JPEG photo of poster i (warped, relit, on clutter) and where its corners landed."""
    model = homography(*SIZE, seed=i + seed, scale=1.1, angle=10.0)
    path = folder / f"photo_{i:02d}_{seed}.jpg"
    Image.fromarray(photo(poster(i, SIZE), model, (640, 480), seed=i + seed)).save(path, quality=90)
    return path, mapped_corners(model, *SIZE)


def _engine(path: Path, extractor: Extractor, **kwargs: object) -> Engine:
    return Engine.create(path, extractor, exist_ok=True, options=EngineOptions(device="cpu", workers=0),
                         **kwargs)  # type: ignore[arg-type]


def test_a_photo_finds_its_poster_with_inliers_and_the_region_it_occupies(
        tmp_path: Path, posters: Path, extractor: Extractor) -> None:
    with _engine(tmp_path / "b", extractor, local_features="sift") as engine:
        report = engine.index([posters])
        assert report.added == POSTERS and not report.failed
        ids = {Path(h.path).name: h.id for h in engine.search(np.ones(engine.manifest.dim, np.float32), k=POSTERS)}
        for i in (0, 7, 15, 23):
            query, corners = _photo_of(i, tmp_path)
            hits = engine.search(query, k=5)
            top = hits[0]
            assert Path(top.path).name == f"poster_{i:02d}.jpg", [(Path(h.path).name, h.inliers) for h in hits]
            assert top.inliers is not None and top.inliers >= 15
            assert all(h.inliers is not None and h.inliers < top.inliers for h in hits[1:])
            assert top.region is not None
            np.testing.assert_allclose(np.array(top.region), corners, atol=6.0)
            plain = engine.search(query, k=5, rerank=False)
            assert all(h.inliers is None and h.region is None for h in plain)
            assert engine.search(ids[f"poster_{i:02d}.jpg"], k=1)[0].id != ids[f"poster_{i:02d}.jpg"]


def test_removed_images_are_never_found_and_a_reopened_engine_finds_what_was_added(
        tmp_path: Path, posters: Path, extractor: Extractor) -> None:
    with _engine(tmp_path / "b", extractor, local_features="sift") as engine:
        engine.index([posters])
        query, _ = _photo_of(3, tmp_path)
        assert engine.remove([posters / "poster_03.jpg"]) == 1
        assert all(Path(h.path).name != "poster_03.jpg" for h in engine.search(query, k=POSTERS))
        engine.add([posters / "poster_03.jpg"])
    with Engine.open(tmp_path / "b", extractor=extractor) as reopened:  # from the saved local index
        top = reopened.search(query, k=1)[0]
        assert Path(top.path).name == "poster_03.jpg" and top.inliers is not None and top.inliers >= 15


def test_queries_local_features_cannot_help_fall_back_to_the_global_ranking(
        tmp_path: Path, posters: Path, extractor: Extractor) -> None:
    with _engine(tmp_path / "b", extractor, local_features="sift") as engine:
        engine.index([posters])
        flat = tmp_path / "flat.png"
        Image.new("RGB", (300, 200), (120, 130, 140)).save(flat)
        tiny = tmp_path / "tiny.png"
        Image.new("RGB", (1, 1), (9, 9, 9)).save(tiny)
        for query in (flat, tiny):
            assert [h.id for h in engine.search(query, k=5)] == [h.id for h in engine.search(query, k=5, rerank=False)]
        vector = engine.vectors([1])[0]  # a vector query has no image: global, no inliers
        assert all(h.inliers is None for h in engine.search(vector, k=3))


def test_local_features_are_chosen_at_creation_and_checked(tmp_path: Path, posters: Path,
                                                          extractor: Extractor) -> None:
    with pytest.raises(UnknownNameError, match="sift"):
        _engine(tmp_path / "typo", extractor, local_features="surf")
    assert not (tmp_path / "typo").exists()
    with pytest.raises(RetrievalError, match="max_features"):
        _engine(tmp_path / "bad", extractor, local_features={"name": "sift", "params": {"max_features": 0}})
    with _engine(tmp_path / "plain", extractor) as plain:
        plain.add([posters / "poster_00.jpg"])
        with pytest.raises(BadQueryError, match="local features"):
            plain.search(posters / "poster_01.jpg", k=1, rerank=True)
    with pytest.raises(RetrievalError, match="keeps no local features"):
        _engine(tmp_path / "plain", extractor, local_features="sift")
