"""Inline pictures in the terminal: which protocol an environment gets, the escape
sequences of each (read back into pixels here), and `retrieve query --preview` end to end."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval import Engine
from retrieval.errors import BadQueryError
from retrieval.cli import terminal

from .conftest import invoke, one_error_line


@pytest.mark.parametrize(("env", "protocol"), [
    ({"TERM": "xterm-kitty"}, "kitty"),
    ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
    ({"TERM": "xterm-ghostty", "TERM_PROGRAM": "ghostty"}, "kitty"),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, "iterm"),
    ({"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"}, "iterm"),  # iTerm2 over ssh
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, "iterm"),
    ({"TERM": "foot"}, "sixel"),
    ({"TERM": "mlterm"}, "sixel"),
    ({"TERM": "xterm-256color", "KONSOLE_VERSION": "230804"}, "sixel"),
    ({"TERM": "xterm-256color"}, None),
    ({"TERM": "dumb"}, None),
    ({}, None),
    ({"TERM": "tmux-256color", "KITTY_WINDOW_ID": "1"}, None),  # tmux swallows the sequences
    ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"}, None),
    ({"TERM": "xterm-256color", "RETRIEVE_PREVIEW": "sixel"}, "sixel"),  # the user knows better
    ({"TERM": "xterm-kitty", "RETRIEVE_PREVIEW": "none"}, None),
])
def test_the_protocol_is_told_by_the_terminals_environment(env: dict[str, str], protocol: str | None) -> None:
    assert terminal.detect(env) == protocol


def test_a_wrong_preview_override_is_refused() -> None:
    with pytest.raises(BadQueryError, match="RETRIEVE_PREVIEW='kity'.*kitty, iterm, sixel"):
        terminal.detect({"RETRIEVE_PREVIEW": "kity"})


def _noise_jpeg(width: int = 120, height: int = 90) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def test_kitty_sends_the_picture_as_png_in_chunks_of_at_most_4096() -> None:
    jpeg = _noise_jpeg()  # noise: the PNG is large, so it takes several chunks
    sequence = terminal.inline_image(jpeg, "kitty")
    chunks = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", sequence)
    assert "".join(f"\x1b_G{k};{p}\x1b\\" for k, p in chunks) == sequence  # nothing else in it
    assert len(chunks) > 2 and all(len(payload) <= 4096 for _, payload in chunks)
    assert chunks[0][0].startswith("a=T,f=100,")  # transmit and show, a PNG
    assert [keys.split("m=")[1] for keys, _ in chunks] == ["1"] * (len(chunks) - 1) + ["0"]
    png = base64.b64decode("".join(payload for _, payload in chunks))
    with Image.open(io.BytesIO(png)) as shown, Image.open(io.BytesIO(jpeg)) as original:
        assert shown.format == "PNG"
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(original.convert("RGB")))


def test_iterm_sends_the_file_itself() -> None:
    jpeg = _noise_jpeg()
    match = re.fullmatch(r"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]*)\x07", terminal.inline_image(jpeg, "iterm"))
    assert match is not None
    keys = dict(pair.split("=") for pair in match.group(1).split(";"))
    assert keys["inline"] == "1" and int(keys["size"]) == len(jpeg)
    assert base64.b64decode(match.group(2)) == jpeg


def _read_sixel(sequence: str) -> np.ndarray:
    """The pixels a sixel sequence draws, as (height, width, 3) colour percentages."""
    body = re.fullmatch(r"\x1bP[0-9;]*q(.*)\x1b\\", sequence, re.S)
    assert body is not None
    tokens = re.findall(r'"\d+;\d+;(\d+);(\d+)|#(\d+)(?:;2;(\d+);(\d+);(\d+))?|!(\d+)([?-~])|([?-~])|(\$)|(-)',
                        body.group(1))
    assert "".join(m.group(0) for m in re.finditer(
        r'"\d+;\d+;\d+;\d+|#\d+(?:;2;\d+;\d+;\d+)?|!\d+[?-~]|[?-~$-]', body.group(1))) == body.group(1)
    palette: dict[int, tuple[int, int, int]] = {}
    pixels = np.full((0, 0, 3), -1)
    x = y = colour = 0
    for width, height, number, r, g, b, count, repeated, single, cr, nl in tokens:
        if width:
            pixels = np.full((int(height), int(width), 3), -1)
        elif number:
            colour = int(number)
            if r:
                palette[colour] = (int(r), int(g), int(b))
        elif cr:
            x = 0
        elif nl:
            x, y = 0, y + 6
        else:
            char = repeated or single
            for _ in range(int(count) if count else 1):
                for bit in range(6):
                    if (ord(char) - 63) >> bit & 1:
                        pixels[y + bit, x] = palette[colour]
                x += 1
    return pixels


def test_sixel_draws_every_pixel_in_its_palette_colour() -> None:
    image = Image.open(io.BytesIO(_noise_jpeg(37, 23))).convert("RGB")  # heights not a multiple of 6
    drawn = _read_sixel(terminal.sixel(image))
    quantized = np.asarray(image.quantize(colors=64).convert("RGB"), dtype=np.int64)
    assert drawn.shape == quantized.shape
    assert np.array_equal(drawn, quantized * 100 // 255)  # every pixel set, none twice wrong


def test_sixel_codes_repeats_as_runs() -> None:
    sequence = terminal.sixel(Image.new("RGB", (200, 6), (255, 0, 0)))
    assert "!200~" in sequence  # one run of 200 full columns, not 200 characters
    assert np.all(_read_sixel(sequence) == [100, 0, 0])


# ---------------------------------------------------------------- retrieve query --preview


def _bundle_ids(bundle: Path) -> list[int]:
    with Engine.open(bundle) as engine:
        return [info.id for info in engine.browse(limit=100).images]


def test_preview_draws_each_results_thumbnail_above_its_line(small_bundle: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM_PROGRAM", "iTerm.app")
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("RETRIEVE_PREVIEW", raising=False)
    query = _bundle_ids(small_bundle)[0]
    res = invoke("query", "--id", str(query), "-k", "3", "-i", str(small_bundle), "--preview")
    assert res.exit_code == 0, res.output
    lines = res.stdout.split("\n")
    assert lines[0].split() == ["rank", "score", "id", "path"]
    with Engine.open(small_bundle) as engine:
        hits = engine.search(query, k=3)
        for n, h in enumerate(hits):
            image, row = lines[1 + 2 * n], lines[2 + 2 * n]
            thumbnail = engine.thumbnail(h.id, 128)
            assert thumbnail is not None
            assert image == terminal.inline_image(thumbnail.data, "iterm")
            assert row.split("  ") == [str(n + 1), f"{h.score:.4f}", str(h.id), h.path]


def test_preview_is_off_by_default_when_stdout_is_no_terminal(small_bundle: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-kitty")
    query = _bundle_ids(small_bundle)[0]
    res = invoke("query", "--id", str(query), "-k", "2", "-i", str(small_bundle))
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout and res.stdout.splitlines()[0] == "rank\tscore\tid\tpath"


def test_preview_asked_of_a_terminal_without_pictures_says_how_to_name_one(small_bundle: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TERM_PROGRAM", "KITTY_WINDOW_ID", "LC_TERMINAL", "KONSOLE_VERSION", "RETRIEVE_PREVIEW", "TMUX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    line = one_error_line(invoke("query", "--id", "1", "-i", str(small_bundle), "--preview"))
    assert "--preview" in line and "RETRIEVE_PREVIEW=kitty" in line
    line = one_error_line(invoke("query", "--id", "1", "-i", str(small_bundle), "--preview", "--paths"))
    assert "--paths" in line
