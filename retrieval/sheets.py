"""Contact sheets: groups of images as thumbnails with captions, in one file a person opens.

A search result or a duplicate group is a list of paths and scores; to judge it one has
to see the pictures. A sheet is either an HTML page, self-contained (thumbnails inline as
``data:`` URIs, no script, no external asset, every text escaped) so it can be mailed or
archived as one file, or a JPEG grid with the captions drawn in, for viewers and chats
that show images only. The format follows the output file's suffix.

Indexed images come from the engine's thumbnail cache (:meth:`Engine.thumbnail`); a file
that is not indexed (a query photo) is decoded here, as a query is. An image that cannot
be shown (gone, changed, undecodable) gets a grey tile saying why: one bad file must not
cost the whole sheet.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from .errors import BadImageError, BadQueryError
from .pictures import render_thumbnail

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["SHEET_FORMATS", "SheetItem", "check_sheet", "sheet_format", "write_sheet"]

SHEET_FORMATS = {".html": "html", ".htm": "html", ".jpg": "jpeg", ".jpeg": "jpeg"}
"""Output suffixes a sheet can be written as, and the format each means."""

THUMB = 256  # the long side of each thumbnail: one of pictures.THUMBNAIL_SIZES, readable on any screen
_COLUMNS = 5  # tiles per row in the JPEG grid (the HTML grid flows with the window)
_PAD = 12
_FONT_SIZE = 14
_LINE = _FONT_SIZE + 6
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_MUTED = (110, 110, 110)
_PLACEHOLDER = (215, 215, 215)
_JPEG_QUALITY = 88


@dataclass(frozen=True)
class SheetItem:
    """One tile: an indexed image (`image_id`) or, with `image_id` None, a file that is not
    in the index (read from `path`); `caption` is shown above the path (rank, score, ...)."""

    image_id: int | None
    path: str
    caption: str


@dataclass(frozen=True)
class _Tile:
    """An item with its thumbnail as JPEG bytes, or the reason there is none."""

    item: SheetItem
    jpeg: bytes | None
    problem: str | None


def write_sheet(engine: Engine, groups: Sequence[tuple[str, Sequence[SheetItem]]], out: Path, title: str) -> Path:
    """Write a contact sheet of `groups` (each a heading and its items, shown in order) to
    `out`, as HTML or JPEG after its suffix; returns `out`.

    Raises:
        BadQueryError: `out` has a suffix no sheet format has, or cannot be written; a
            JPEG sheet of more images than fit in JPEG's 65,535 pixels of height.
    """
    fmt = check_sheet(out, [len(items) for _, items in groups])
    tiled = [(heading, [_tile(engine, item) for item in items]) for heading, items in groups]
    data = _html(tiled, title) if fmt == "html" else _jpeg(tiled, title)
    try:
        out.write_bytes(data)
    except OSError as e:
        raise BadQueryError(f"cannot write the sheet {out}: {e.strerror or e}") from None
    return out


def sheet_format(out: Path) -> str:
    """The format a sheet at `out` is written in ("html" or "jpeg"), after its suffix.

    Raises:
        BadQueryError: a suffix no sheet format has.
    """
    fmt = SHEET_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise BadQueryError(f"a sheet is written as .html or .jpg, not {out.name!r}")
    return fmt


def check_sheet(out: Path, counts: Sequence[int]) -> str:
    """:func:`sheet_format`, and whether groups of `counts` images fit in it: a caller
    checks before any work, so a sheet that cannot be written costs no search.

    Raises:
        BadQueryError: a suffix no sheet format has; more images than a JPEG sheet holds.
    """
    fmt = sheet_format(out)
    if fmt == "jpeg" and _grid(counts)[2] > _JPEG_MAX_SIDE:
        most = (_JPEG_MAX_SIDE - 2 * _LINE - 2 * _PAD) // _CELL_H * _COLUMNS
        raise BadQueryError(f"{sum(counts)} images do not fit in a JPEG sheet (about {most} do): write it as .html")
    return fmt


def _tile(engine: Engine, item: SheetItem) -> _Tile:
    """The item's thumbnail: the engine's (cached) one for an indexed image, else made from the file."""
    try:
        if item.image_id is None:
            return _Tile(item, render_thumbnail(item.path, THUMB), None)
        picture = engine.thumbnail(item.image_id, THUMB)
    except BadImageError as e:
        return _Tile(item, None, str(e))
    if picture is None:
        return _Tile(item, None, f"id {item.image_id} is not in the index")
    return _Tile(item, picture.data, None)


def _encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


# ---------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #141414; background: #fff; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
figure { margin: 0; width: 256px; }
figure img, .missing { width: 256px; height: 256px; object-fit: contain; background: #f2f2f2; display: block; }
.missing { display: flex; align-items: center; justify-content: center; text-align: center; color: #666;
           font-size: .85em; padding: 1em; box-sizing: border-box; }
figcaption { font-size: .85em; margin-top: 4px; }
.path { color: #666; word-break: break-all; }
"""


def _html(groups: list[tuple[str, list[_Tile]]], title: str) -> bytes:
    """A self-contained page: no script, no link to anything but the originals themselves."""
    parts = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
             f"<title>{_esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n"]
    for heading, tiles in groups:
        parts.append(f'<section>\n<h2>{_esc(heading)}</h2>\n<div class="grid">\n')
        parts.extend(_figure(tile) for tile in tiles)
        parts.append("</div>\n</section>\n")
    parts.append("</body>\n</html>\n")
    # a path that is not UTF-8 (kept by Python as lone surrogates) is written escaped, not refused
    return "".join(parts).encode("utf-8", "backslashreplace")


def _figure(tile: _Tile) -> str:
    item = tile.item
    if tile.jpeg is not None:
        uri = "data:image/jpeg;base64," + base64.b64encode(tile.jpeg).decode("ascii")
        picture = f'<img src="{uri}" alt="{_esc(item.path)}">'
    else:
        picture = f'<div class="missing">no preview: {_esc(tile.problem or "")}</div>'
    return (f"<figure>{picture}<figcaption><div>{_esc(item.caption)}</div>"
            f'<div class="path">{_esc(item.path)}</div></figcaption></figure>\n')


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


# ---------------------------------------------------------------------- JPEG


_CELL_W, _CELL_H = THUMB + _PAD, THUMB + 2 * _LINE + _PAD  # a tile: thumbnail, caption and path lines
_JPEG_MAX_SIDE = 65_535  # the most pixels a JPEG can have on a side


def _grid(counts: Sequence[int]) -> tuple[int, int, int]:
    """Columns, width and height of a JPEG sheet of groups of `counts` images."""
    columns = max(1, min(_COLUMNS, max(counts, default=1)))
    height = _PAD + _LINE + sum(_LINE + _PAD + -(-n // columns) * _CELL_H for n in counts)
    return columns, _PAD + columns * _CELL_W, height


def _jpeg(groups: list[tuple[str, list[_Tile]]], title: str) -> bytes:
    """A grid image: the title, then per group its heading and rows of captioned tiles."""
    font = ImageFont.load_default(size=_FONT_SIZE)
    columns, width, height = _grid([len(tiles) for _, tiles in groups])
    sheet = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, _PAD), _fit(draw, font, title, width - 2 * _PAD), fill=_TEXT, font=font)
    y = _PAD + _LINE
    for heading, tiles in groups:
        y += _PAD
        draw.text((_PAD, y), _fit(draw, font, heading, width - 2 * _PAD), fill=_TEXT, font=font)
        y += _LINE
        for i, tile in enumerate(tiles):
            row, col = divmod(i, columns)
            _draw_tile(sheet, draw, font, tile, _PAD + col * _CELL_W, y + row * _CELL_H)
        y += -(-len(tiles) // columns) * _CELL_H
    return _encode(sheet)


def _draw_tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
               tile: _Tile, x: int, y: int) -> None:
    """One thumbnail centred in its THUMB x THUMB box, its caption and path below."""
    if tile.jpeg is not None:
        with Image.open(io.BytesIO(tile.jpeg)) as thumb:
            thumb.thumbnail((THUMB, THUMB))  # a cached thumbnail may come from an older, larger size
            sheet.paste(thumb.convert("RGB"), (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
    else:
        draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), fill=_PLACEHOLDER)
        draw.text((x + 8, y + THUMB // 2 - _LINE), "no preview:", fill=_TEXT, font=font)
        draw.text((x + 8, y + THUMB // 2), _fit(draw, font, tile.problem or "", THUMB - 16), fill=_TEXT, font=font)
    draw.text((x, y + THUMB + 3), _fit(draw, font, tile.item.caption, THUMB), fill=_TEXT, font=font)
    draw.text((x, y + THUMB + 3 + _LINE), _fit(draw, font, tile.item.path, THUMB, keep_end=True), fill=_MUTED,
              font=font)


def _fit(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int,
         keep_end: bool = False) -> str:
    """`text` cut with "..." to fit `width` pixels: at its start when `keep_end` (a path's
    file name is what tells it apart), else at its end. Unprintable characters are shown as '?'."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    if draw.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)  # the most characters kept that still fit, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        cut = "..." + text[-mid:] if keep_end else text[:mid] + "..."
        if draw.textlength(cut, font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    kept = text[len(text) - lo:] if keep_end else text[:lo]
    return "..." + kept if keep_end else kept + "..."
