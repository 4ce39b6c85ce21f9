"""The local features of one image, and their compact, versioned byte form.

A :class:`LocalFeatures` holds what both search stages need: descriptors (to assign visual
words and to find tentative matches) and keypoints in the original image's pixel frame
(to fit a geometric model and draw the matched region on the original). The catalog
stores one :meth:`LocalFeatures.to_bytes` BLOB per image, so the vocabulary and the
inverted file can be rebuilt without reading an image again; :meth:`LocalFeatures.from_bytes`
checks every length, count and value a search would rely on, so a damaged or crafted BLOB
is a ValueError (the caller re-extracts or skips the image), never a crash in OpenCV.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["LocalFeatures", "DESCRIPTOR_SCALE", "KINDS", "MAX_STORED_FEATURES"]

# RootSIFT components are square roots of an L1-normalised SIFT vector whose entries
# OpenCV clips at 0.2 of its L2 norm, so each lies in [0, sqrt(0.2)] ~ [0, 0.45]:
# x 512 fits a byte (at most ~229) with a step of 1/512, a relative error of ~0.6% of
# the unit vector's length (measured in tests/local/test_features.py).
DESCRIPTOR_SCALE = 512.0

# Descriptor kinds: byte code in the header -> (name, dimension). Codes are never reused.
KINDS: dict[int, tuple[str, int]] = {1: ("rootsift", 128)}
_CODES = {name: (code, dim) for code, (name, dim) in KINDS.items()}

# A bound on what a BLOB may claim, so a crafted count cannot ask for gigabytes.
MAX_STORED_FEATURES = 100_000
_MAX_SIDE = 1 << 20  # pixels; far above any image the decoder lets through

_MAGIC = b"RLFT"
_VERSION = 1
# magic, version, kind code, descriptor dimension, count, width, height (little-endian)
_HEADER = struct.Struct("<4sBBHIII")


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Keypoints and descriptors of one image.

    Attributes:
        keypoints: float32 (N, 4): x, y (pixel centres of the original image, before any
            reduction for detection), size (diameter, original pixels) and angle (degrees).
        descriptors: uint8 (N, D): the descriptor quantised, ``round(value * DESCRIPTOR_SCALE)``.
            Extractors store features strongest first, so a prefix is the best subset.
        width, height: the original image's size, so a verifier can map its corners.
        kind: the descriptor kind, a name in :data:`KINDS`.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int
    kind: str = "rootsift"

    def __post_init__(self) -> None:
        if self.kind not in _CODES:
            raise ValueError(f"unknown descriptor kind {self.kind!r}; known: {', '.join(_CODES)}")
        dim = _CODES[self.kind][1]
        k, d = self.keypoints, self.descriptors
        if k.dtype != np.float32 or k.ndim != 2 or k.shape[1] != 4:
            raise ValueError(f"keypoints are {k.dtype}{list(k.shape)}, expected float32 (N, 4)")
        if d.dtype != np.uint8 or d.ndim != 2 or d.shape[1] != dim or len(d) != len(k):
            raise ValueError(f"descriptors are {d.dtype}{list(d.shape)}, expected uint8 ({len(k)}, {dim})")
        if not (1 <= self.width <= _MAX_SIDE and 1 <= self.height <= _MAX_SIDE):
            raise ValueError(f"image size {self.width}x{self.height} is out of range")
        if len(k) > MAX_STORED_FEATURES:
            raise ValueError(f"{len(k)} features, more than {MAX_STORED_FEATURES}")
        if not np.isfinite(k).all() or (k[:, 2] <= 0).any():
            raise ValueError("keypoints hold a non-finite value or a non-positive size")
        x, y = k[:, 0], k[:, 1]
        if (x < -1).any() or (y < -1).any() or (x > self.width).any() or (y > self.height).any():
            raise ValueError(f"a keypoint lies outside the {self.width}x{self.height} image")

    @classmethod
    def empty(cls, width: int, height: int, kind: str = "rootsift") -> LocalFeatures:
        """No features (a flat or tiny image): search falls back to the global stage."""
        dim = _CODES[kind][1] if kind in _CODES else 0
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, dim), np.uint8), width, height, kind)

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def points(self) -> np.ndarray:
        """float32 (N, 2): keypoint positions, x then y, in original pixels."""
        return self.keypoints[:, :2]

    def unit_descriptors(self) -> np.ndarray:
        """float32 (N, D) descriptors back on the unit sphere (up to quantisation)."""
        return self.descriptors.astype(np.float32) / DESCRIPTOR_SCALE

    def to_bytes(self) -> bytes:
        """Header (20 bytes), keypoints as little-endian float32 (16 bytes each),
        descriptors as bytes (128 each for RootSIFT): 144,020 bytes at 1,000 features."""
        code, dim = _CODES[self.kind]
        header = _HEADER.pack(_MAGIC, _VERSION, code, dim, len(self), self.width, self.height)
        return header + self.keypoints.astype("<f4").tobytes() + self.descriptors.tobytes()

    @classmethod
    def from_bytes(cls, payload: bytes) -> LocalFeatures:
        """The features :meth:`to_bytes` wrote.

        Raises:
            ValueError: the payload is not such a BLOB, comes from a newer version, or is
                damaged (a length, count, kind or value that does not fit).
        """
        if len(payload) < _HEADER.size:
            raise ValueError(f"local features of {len(payload)} bytes, shorter than their header")
        magic, version, code, dim, count, width, height = _HEADER.unpack_from(payload)
        if magic != _MAGIC:
            raise ValueError("not a local-feature BLOB (bad magic)")
        if version != _VERSION:
            raise ValueError(f"local features of format version {version}; this release reads {_VERSION}")
        if code not in KINDS or KINDS[code][1] != dim:
            raise ValueError(f"unknown descriptor kind {code} of dimension {dim}")
        if count > MAX_STORED_FEATURES:
            raise ValueError(f"local features claim {count} features, more than {MAX_STORED_FEATURES}")
        expected = _HEADER.size + count * (16 + dim)
        if len(payload) != expected:
            raise ValueError(f"local features of {len(payload)} bytes; {count} features need {expected}")
        body = np.frombuffer(payload, np.uint8, offset=_HEADER.size)
        keypoints = body[: count * 16].view("<f4").astype(np.float32).reshape(count, 4)
        descriptors = body[count * 16:].reshape(count, dim).copy()
        return cls(keypoints, descriptors, width, height, KINDS[code][0])
