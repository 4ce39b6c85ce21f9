"""What the server asks of the engine, checked without HTTP: the arguments it refuses and
what it answers for unknown ids and missing files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from retrieval import Engine
from retrieval.browse import MAX_PAGE
from retrieval.errors import BadImageError, BadQueryError
from retrieval.projection import MAX_POINTS

from .. import badimages


@pytest.fixture()
def engine(bundle: tuple[Path, Path], extractor):
    with Engine.open(bundle[0], extractor=extractor) as e:
        yield e


@pytest.mark.parametrize("after, limit", [(-1, 10), (0, 0), (0, MAX_PAGE + 1), (True, 10), (0, 2.5)])
def test_browse_refuses_bad_pages(engine: Engine, after: object, limit: object) -> None:
    with pytest.raises(BadQueryError):
        engine.browse(after=after, limit=limit)  # type: ignore[arg-type]


def test_browse_filters_as_search_does(engine: Engine, bundle: tuple[Path, Path]) -> None:
    from retrieval.filters import Filter

    chairs = engine.browse(Filter(folders=(str(bundle[1] / "chair"),)), limit=3)
    assert chairs.total == 5 and len(chairs.images) == 3
    assert chairs.next_after is not None and chairs.next_after == chairs.images[-1].id
    rest = engine.browse(Filter(folders=(str(bundle[1] / "chair"),)), after=chairs.next_after)
    assert len(rest.images) == 2 and rest.next_after is None
    assert engine.browse({"colour": "red"}).total == 0


def test_unknown_ids_are_none(engine: Engine) -> None:
    assert engine.original(999) is None and engine.thumbnail(999) is None and engine.image_infos([999]) == {}


@pytest.mark.parametrize("size", [0, 100, 1024, True])
def test_thumbnail_sizes_are_a_fixed_few(engine: Engine, size: int) -> None:
    with pytest.raises(BadQueryError, match="64, 128, 256, 512"):
        engine.thumbnail(1, size)


def test_a_missing_file_is_a_bad_image_not_a_crash(fresh_bundle: Callable[..., tuple[Path, Path]],
                                                   extractor) -> None:
    bundle, _ = fresh_bundle()
    with Engine.open(bundle, extractor=extractor) as engine:
        path = Path(engine.image_infos([2])[2].path)
        assert engine.original(2).data == path.read_bytes()  # type: ignore[union-attr]
        path.unlink()
        with pytest.raises(BadImageError):
            engine.original(2)
        with pytest.raises(BadImageError):
            engine.thumbnail(2, 512)


def test_map_limits_and_an_empty_index(engine: Engine, tmp_path: Path, extractor) -> None:
    for limit in (0, MAX_POINTS + 1, 1.5):
        with pytest.raises(BadQueryError):
            engine.map(limit)  # type: ignore[arg-type]
    with Engine.create(tmp_path / "empty", extractor) as empty:
        placed = empty.map()
        assert placed.total == 0 and placed.xy.shape == (0, 2)


def test_decode_query_checks_pixels_from_the_header(engine: Engine, tmp_path: Path) -> None:
    bomb = badimages.write_bomb_header(tmp_path / "bomb.png", 5000, 5000)
    with pytest.raises(BadImageError, match="pixels"):
        engine.decode_query(bomb.read_bytes(), max_pixels=1_000_000)
    image = engine.decode_query(badimages.sample_photos(1)[0].read_bytes())
    assert image.mode == "RGB" and max(image.size) <= 300
