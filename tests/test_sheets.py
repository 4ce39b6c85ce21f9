"""Contact sheets: an HTML page that needs nothing beside it and shows text as text, a JPEG
grid with the pictures where they belong, and a tile saying why an image cannot be shown."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval import Engine
from retrieval.errors import BadQueryError
from retrieval.sheets import SheetItem, write_sheet

from .htmlpage import Page


@pytest.fixture()
def engine(make_engine: Callable[..., Engine], tmp_path: Path) -> Engine:
    """An index of a red landscape and a blue portrait picture (noise-free, so their
    colours survive JPEG), with paths that hold HTML."""
    folder = tmp_path / "pictures <b>&"
    folder.mkdir()
    Image.new("RGB", (300, 200), (230, 20, 20)).save(folder / "red.png")
    Image.new("RGB", (200, 300), (20, 20, 230)).save(folder / "blue.png")
    engine = make_engine()
    engine.index([folder])
    return engine


def _ids(engine: Engine) -> dict[str, int]:
    return {Path(info.path).stem: info.id for info in engine.browse().images}


def _mean_colour(jpeg: bytes) -> tuple[float, ...]:
    with Image.open(io.BytesIO(jpeg)) as image:
        return tuple(np.asarray(image.convert("RGB"), dtype=np.float64).mean(axis=(0, 1)))


def test_html_sheet_is_self_contained_and_shows_text_as_text(engine: Engine, tmp_path: Path) -> None:
    ids = _ids(engine)
    query = tmp_path / "query.jpg"  # not indexed, its EXIF says: turn 90 degrees to show upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 100), (20, 200, 20)).save(query, exif=exif)
    red = next(i for i in engine.browse().images if i.id == ids["red"])
    groups = [("query <script>alert(1)</script>", [SheetItem(None, str(query), "the query")]),
              ("results", [SheetItem(ids["red"], red.path, "1. score 0.9 & more"),
                           SheetItem(12345, "/gone.jpg", "2. gone")])]
    out = write_sheet(engine, groups, tmp_path / "sheet.html", "title <i>")
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert page.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "section", "div", "figure",
                         "img", "figcaption"}  # no script, link, iframe, nor the markup of the texts
    assert len(page.urls) == 2 and all(u.startswith("data:image/jpeg;base64,") for u in page.urls)
    pictures = [base64.b64decode(u.split(",", 1)[1]) for u in page.urls]
    with Image.open(io.BytesIO(pictures[0])) as shown:
        assert shown.height == 256 and shown.width < 100  # upright: portrait, fitted in 256
    assert _mean_colour(pictures[0])[1] > 150 and _mean_colour(pictures[1])[0] > 150  # green query, red result
    for text in ("title <i>", "query <script>alert(1)</script>", "1. score 0.9 & more", red.path, "/gone.jpg"):
        assert text in page.text
    assert any("not in the index" in t for t in page.text)  # the unknown id's tile says why


def test_jpeg_sheet_puts_each_picture_in_its_tile_in_order(engine: Engine, tmp_path: Path) -> None:
    ids = _ids(engine)
    infos = {i.id: i.path for i in engine.browse().images}
    items = [SheetItem(ids[name], infos[ids[name]], name) for name in ("red", "blue")]
    out = write_sheet(engine, [("results", [*items, SheetItem(999, "/gone.jpg", "gone")])], tmp_path / "s.JPG", "t")
    with Image.open(out) as sheet:
        assert sheet.format == "JPEG"
        pixels = np.asarray(sheet.convert("RGB"), dtype=np.int32)
    red = (pixels[..., 0] > 180) & (pixels[..., 2] < 80)
    blue = (pixels[..., 2] > 180) & (pixels[..., 0] < 80)
    grey = np.all(np.abs(pixels - 215) < 6, axis=-1)

    def box(mask: np.ndarray) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(mask)
        return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1

    rx0, ry0, rx1, ry1 = box(red)
    bx0, by0, bx1, by1 = box(blue)
    assert (rx1 - rx0, ry1 - ry0) == pytest.approx((256, 171), abs=3)  # 300 x 200 fitted in 256
    assert (bx1 - bx0, by1 - by0) == pytest.approx((171, 256), abs=3)
    assert rx1 <= bx0 and ry0 < by1 and by0 < ry1  # side by side, in the order given
    tile_columns = np.flatnonzero(grey.sum(axis=0) > 200)  # the missing image's tile: a tall grey square
    assert len(tile_columns) == pytest.approx(256, abs=3) and tile_columns.min() >= bx1  # third in the row


def test_a_sheet_names_what_is_wrong_with_its_output_path(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(BadQueryError, match=r"\.html or \.jpg, not 'sheet\.png'"):
        write_sheet(engine, [], tmp_path / "sheet.png", "t")
    with pytest.raises(BadQueryError, match="cannot write the sheet .*missing"):
        write_sheet(engine, [], tmp_path / "missing" / "sheet.html", "t")
    too_many = [SheetItem(n, f"/photos/{n}.jpg", "") for n in range(2000)]  # 400 rows of tiles: over 65,535 pixels
    with pytest.raises(BadQueryError, match="2000 images do not fit in a JPEG sheet.*html"):
        write_sheet(engine, [("results", too_many)], tmp_path / "sheet.jpg", "t")
    assert not (tmp_path / "sheet.jpg").exists()
