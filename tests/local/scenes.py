"""Synthetic images with real texture for the local-feature tests, and warped copies.

A "poster" is a flat object with texture SIFT can hold on to: random filled shapes, lines,
text and noise patches, drawn from a seed (the same seed draws the same image). A "photo"
of a poster is a known homography of it (cv2.warpPerspective), relit, pasted on a
different cluttered background, so a test knows exactly where each poster corner landed.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def poster(seed: int, size: tuple[int, int] = (480, 360)) -> np.ndarray:
    """A textured RGB uint8 image (H, W, 3) of `size` (width, height)."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(8, width // 4)), y0 + int(rng.integers(8, height // 4))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 6)))
    font = ImageFont.load_default(size=22)
    for _ in range(8):
        text = "".join(chr(c) for c in rng.integers(65, 91, 6))
        draw.text((int(rng.integers(0, width - 80)), int(rng.integers(0, height - 24))), text,
                  fill=tuple(int(v) for v in rng.integers(0, 256, 3)), font=font)
    pixels = np.asarray(image).copy()
    for _ in range(6):  # patches of coarse noise
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        noise = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        pixels[y:y + 40, x:x + 40] = cv2.resize(noise, (40, 40), interpolation=cv2.INTER_NEAREST)
    return pixels


def clutter(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A busy background of another texture, smoothed so it is not another poster."""
    return cv2.GaussianBlur(poster(10_000 + seed, size), (0, 0), 1.5)


def photo(source: np.ndarray, homography: np.ndarray, size: tuple[int, int], seed: int,
          gain: float = 0.8, offset: float = 20.0) -> np.ndarray:
    """`source` warped by `homography` into an image of `size` (width, height) over clutter,
    with its brightness changed (gain, offset) and a little sensor noise."""
    warped = cv2.warpPerspective(source, homography, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full(source.shape[:2], 255, np.uint8), homography, size) > 127
    out = clutter(seed, size)
    out[mask] = warped[mask]
    noise = np.random.default_rng(seed).normal(0.0, 3.0, out.shape)
    return np.clip(out.astype(np.float64) * gain + offset + noise, 0, 255).astype(np.uint8)


def homography(width: int, height: int, seed: int, scale: float = 1.0, shift: tuple[float, float] = (60, 40),
               angle: float = 12.0, perspective: float = 4e-4) -> np.ndarray:
    """A plausible camera change: rotation about the centre, scale, shift and some tilt."""
    rng = np.random.default_rng(seed)
    centre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]], np.float64)
    a = np.deg2rad(angle)
    rotate = np.array([[scale * np.cos(a), -scale * np.sin(a), 0], [scale * np.sin(a), scale * np.cos(a), 0],
                       [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, 1, 0], [perspective * rng.choice([-1, 1]), perspective * rng.uniform(-1, 1), 1]])
    back = np.array([[1, 0, width / 2 + shift[0]], [0, 1, height / 2 + shift[1]], [0, 0, 1]], np.float64)
    return back @ tilt @ rotate @ centre


def mapped_corners(model: np.ndarray, width: int, height: int) -> np.ndarray:
    """Where `model` sends an image's outer pixel corners (cv2's pixel-centre convention)."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    return cv2.perspectiveTransform(corners[None], model)[0]
