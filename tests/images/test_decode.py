"""Memory per decode stays near the decoded image: large images are reduced before any
full-size conversion or alpha compositing (issue 12), and the canvases barely change.

Before, a 100-Mpx RGBA PNG took ~2.3 GB to decode (alpha composited at full size, four
copies of the image), ~9 GB with four decode workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.images.decode import load_image
from retrieval.images.preprocess import Preprocessor

from ..badimages import EXIF_ORIENTATION

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh process: the peak resident size (VmHWM) is reset just before the decode,
# so the number is the decode's own, not the imports'.
_MEASURE = """
import os, sys
from retrieval.images.decode import load_image
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
def peak_mb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
open("/proc/self/clear_refs", "w").write("5")
before = rss_mb()
load_image(sys.argv[1], draft_size=int(sys.argv[2]))
print(peak_mb() - before)
"""


def _gradient(width: int, height: int, mode: str) -> Image.Image:
    """A smooth image (it compresses well: the test writes it fast) with varying alpha."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    channels = [np.broadcast_to(c, (height, width)) for c in (y, x, (x + y) / 2, np.abs(x - y))]
    rgba = Image.fromarray(np.stack(channels, -1).astype(np.uint8), "RGBA")
    return rgba if mode == "RGBA" else rgba.convert(mode)


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's VmHWM reset")
def test_a_large_rgba_png_decodes_within_twice_its_pixels(tmp_path: Path) -> None:
    side = 6000
    path = tmp_path / "large.png"
    _gradient(side, side, "RGBA").save(path, compress_level=1)
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(path), "288"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    peak = float(run.stdout)
    pixels = side * side * 4 / 2**20  # 137 MB of decoded RGBA
    assert peak < 2 * pixels, peak  # before: 826 MB here, ~6x the pixels, compositing at full size


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "RGB"])
def test_reducing_before_converting_gives_the_same_canvas(tmp_path: Path, mode: str) -> None:
    """Box-averaging first (premultiplied for alpha) and converting after matches
    converting the full image, within rounding, EXIF orientation included."""
    image = _gradient(2400, 1500, "RGBA")
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image.convert("L"), np.uint16) * 257).astype(np.uint16))
    elif mode == "P":
        image = image.convert("RGB").quantize(64)
        image.info["transparency"] = 0
    else:
        image = image.convert(mode)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "image.png"
    image.save(path, exif=exif.tobytes())
    pre = Preprocessor(96)
    reduced = load_image(path, draft_size=96)
    full = load_image(path)
    assert full.image.size == (1500, 2400) and reduced.image.size == (188, 300)  # upright, reduced 8x
    assert (reduced.width, reduced.height) == (full.width, full.height) == (1500, 2400)
    a, h, w = pre(reduced.image)
    b, *size = pre(full.image)
    assert size == [h, w] == [96, 60]
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 1.0
