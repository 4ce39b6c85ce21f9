"""Pictures where the user looks: inline images in terminals that can draw them, and a
file handed to the desktop's viewer.

Three protocols cover the terminals that show images: kitty's graphics protocol (kitty,
Ghostty), iTerm2's inline images (iTerm2, WezTerm) and sixel (foot, mlterm, Konsole, ...).
None can be asked for reliably without reading the terminal's answer from stdin, so the
protocol is told by the environment the terminal sets (TERM, TERM_PROGRAM,
KITTY_WINDOW_ID, ...), and ``RETRIEVE_PREVIEW`` names it where that guess fails. Inside
tmux or screen nothing is guessed: they swallow the sequences unless set up to pass them.

Each function returns the escape sequence as text, so the caller decides where it goes
and tests can read it back.
"""

import base64
import io
import os
import webbrowser
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadQueryError

__all__ = ["PROTOCOLS", "PREVIEW_ENV", "detect", "inline_image", "open_in_viewer"]

PROTOCOLS = ("kitty", "iterm", "sixel")
PREVIEW_ENV = "RETRIEVE_PREVIEW"  # names the protocol (or "none") where detection guesses wrong
ROWS = 6  # the height of an inline image, in text rows, where the protocol scales it

_KITTY_CHUNK = 4096  # the protocol's largest payload per escape sequence
_SIXEL_COLOURS = 64  # enough for a thumbnail; each colour costs a pass over every band
_SIXEL_TERMS = {"foot", "foot-extra", "mlterm", "yaft-256color", "contour"}
_MULTIPLEXERS = ("screen", "tmux")


def detect(env: Mapping[str, str] | None = None) -> str | None:
    """The image protocol of the terminal described by `env` (default: this process's
    environment), or None when it shows none, or none that can be told.

    Raises:
        BadQueryError: RETRIEVE_PREVIEW names no protocol.
    """
    env = os.environ if env is None else env
    forced = env.get(PREVIEW_ENV, "").strip().lower()
    if forced:
        if forced == "none":
            return None
        if forced not in PROTOCOLS:
            raise BadQueryError(f"{PREVIEW_ENV}={forced!r}: expected one of {', '.join(PROTOCOLS)} or none")
        return forced
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    if env.get("TMUX") or term.startswith(_MULTIPLEXERS):
        return None
    if env.get("KITTY_WINDOW_ID") or term in ("xterm-kitty", "xterm-ghostty") or program == "ghostty":
        return "kitty"
    if program in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    if term in _SIXEL_TERMS or "sixel" in term or program == "mintty" or env.get("KONSOLE_VERSION"):
        return "sixel"
    return None


def inline_image(jpeg: bytes, protocol: str) -> str:
    """The escape sequence that draws an image (JPEG bytes) at the cursor, about ROWS
    rows high, in `protocol` (one of PROTOCOLS); the cursor ends beside or below it."""
    if protocol == "kitty":
        return _kitty(jpeg)
    if protocol == "iterm":
        return _iterm(jpeg)
    if protocol == "sixel":
        with Image.open(io.BytesIO(jpeg)) as image:
            return sixel(image.convert("RGB"))
    raise ValueError(f"unknown protocol {protocol!r}")


def _kitty(jpeg: bytes) -> str:
    """kitty's graphics protocol: PNG (the one compressed format it takes), base64, sent in
    chunks of at most 4096 bytes, each marked whether more follow (m=1) or not (m=0)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        png = io.BytesIO()
        image.save(png, "PNG")
    payload = base64.b64encode(png.getvalue()).decode("ascii")
    chunks = [payload[i:i + _KITTY_CHUNK] for i in range(0, len(payload), _KITTY_CHUNK)] or [""]
    parts = []
    for n, chunk in enumerate(chunks):
        keys = f"a=T,f=100,q=2,r={ROWS}," if n == 0 else ""  # q=2: no reply on stdin to leave behind
        parts.append(f"\x1b_G{keys}m={int(n < len(chunks) - 1)};{chunk}\x1b\\")
    return "".join(parts)


def _iterm(jpeg: bytes) -> str:
    """iTerm2's inline image: the file itself, base64, in one OSC 1337 sequence."""
    payload = base64.b64encode(jpeg).decode("ascii")
    return f"\x1b]1337;File=inline=1;size={len(jpeg)};height={ROWS};preserveAspectRatio=1:{payload}\x07"


def sixel(image: Image.Image) -> str:
    """`image` (RGB) as a sixel sequence: reduced to a palette, then drawn in bands of six
    rows, one pass per colour present in a band, runs of a repeated column run-length coded."""
    quantized = image.quantize(colors=_SIXEL_COLOURS)
    index = np.asarray(quantized, dtype=np.int16)
    height, width = index.shape
    palette = np.asarray(quantized.getpalette() or [], dtype=np.int32).reshape(-1, 3)
    used = np.unique(index)
    parts = [f'\x1bP0;1;0q"1;1;{width};{height}']
    parts.extend(f"#{c};2;{r * 100 // 255};{g * 100 // 255};{b * 100 // 255}"
                 for c, (r, g, b) in zip(used.tolist(), palette[used].tolist()))
    padded = np.full((-(-height // 6) * 6, width), -1, dtype=np.int16)
    padded[:height] = index
    weights = (1 << np.arange(6, dtype=np.int16))[:, None]
    bands = []
    for top in range(0, padded.shape[0], 6):
        band = padded[top:top + 6]
        passes = [f"#{c}{_run_length(((band == c) * weights).sum(axis=0))}" for c in np.unique(band[band >= 0])]
        bands.append("$".join(passes))
    parts.append("-".join(bands))
    parts.append("\x1b\\")
    return "".join(parts)


def _run_length(bits: np.ndarray) -> str:
    """One colour's columns of a band as sixel characters ('?' + bits), repeats coded as
    !count; trailing empty columns left out (a band's pass may stop early)."""
    last = int(np.flatnonzero(bits)[-1]) + 1 if bits.any() else 0
    bits = bits[:last]
    starts = np.flatnonzero(np.diff(bits, prepend=-1))
    lengths = np.diff(starts, append=len(bits))
    out = []
    for start, length in zip(starts.tolist(), lengths.tolist()):
        char = chr(63 + int(bits[start]))
        out.append(f"!{length}{char}" if length > 3 else char * length)
    return "".join(out)


def open_in_viewer(path: Path) -> bool:
    """Hand a file to the desktop's default program (a browser for HTML, an image viewer or
    browser for JPEG; on Linux through xdg-open); False when no program could be started."""
    return webbrowser.open(path.resolve().as_uri())
