"""Peak memory of decoding one very large image, as one decode worker meets it.

Writes a SIDE x SIDE RGBA PNG (a smooth gradient with varying alpha: small on disk, large
decoded), then decodes it in a fresh process with the engine's `load_image` at the model's
input size, and reports how much the process's peak resident memory grew (Linux: the
kernel's high-water mark, reset just before the decode). The whole image held as RGBA
would be SIDE^2 x 4 bytes; alpha composited at full size costs several times that.

    .venv/bin/python scripts/bench_decode.py                 # 10000 x 10000 = 100 Mpx
    .venv/bin/python scripts/bench_decode.py --side 6000 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_MEASURE = """
import os, sys, time
from retrieval.images.decode import load_image

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def peak_mb():
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))

open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current size
before = rss_mb()
start = time.perf_counter()
image = load_image(sys.argv[1], draft_size=int(sys.argv[2])).image
print(peak_mb() - before, time.perf_counter() - start, *image.size)
"""


def gradient_png(side: int, path: Path) -> None:
    """A smooth RGBA gradient: compresses well, decodes to side^2 x 4 bytes."""
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    pixels = np.empty((side, side, 4), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = ramp[:, None], ramp[None, :], 128
    pixels[..., 3] = ramp[:, None] // 2 + ramp[None, :] // 2
    Image.fromarray(pixels, "RGBA").save(path, compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=10_000, help="image side in pixels (10000: 100 Mpx)")
    parser.add_argument("--image-size", type=int, default=288, help="the model's input side")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "large.png"
        gradient_png(args.side, png)
        run = subprocess.run([sys.executable, "-c", _MEASURE, str(png), str(args.image_size)],
                             capture_output=True, text=True, check=True)
        peak, seconds, width, height = run.stdout.split()
        row = {"side": args.side, "megapixels": args.side ** 2 / 1e6, "file_mb": round(png.stat().st_size / 2**20, 1),
               "rgba_mb": round(args.side ** 2 * 4 / 2**20), "peak_increase_mb": round(float(peak)),
               "seconds": round(float(seconds), 2), "decoded_size": [int(width), int(height)]}
    if args.json:
        print(json.dumps(row))
    else:
        print(f"{row['megapixels']:.0f} Mpx RGBA PNG ({row['file_mb']} MB file, {row['rgba_mb']} MB as RGBA): "
              f"peak grew {row['peak_increase_mb']} MB while decoding to {width}x{height} in {row['seconds']} s")


if __name__ == "__main__":
    main()
