"""What identifies an extractor, without building it: the config that rebuilds it and the
manifest that an index stores. Torch-free, so opening a bundle costs no torch import."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import ExtractorMismatchError, RetrievalError, UnknownNameError
from .pooling import POOLINGS, stored_pooling_params

if TYPE_CHECKING:
    from ..images.preprocess import Preprocessor

__all__ = ["DEFAULT_BACKBONE", "ExtractorConfig", "MAX_SCALES", "Manifest", "RESIZE_MODES", "SCALE_RANGE", "check_scales"]

DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # embedded: works offline (see backbones.py)
RESIZE_MODES = ("letterbox", "squash")
MAX_SCALES = 5  # each scale costs a forward pass
SCALE_RANGE = (0.25, 2.0)  # exclusive, inclusive: below 1/4 a 288 canvas leaves a 2x2 feature map


def check_scales(scales: Sequence[float] | str) -> tuple[float, ...]:
    """Embedding scales as stored: floats, largest first (the order does not change the
    descriptor, so two spellings of one set compare equal), or a one-line RetrievalError.

    Accepts a sequence of numbers or their comma-separated text (``"1,0.7071,0.5"``).
    """
    items = scales.split(",") if isinstance(scales, str) else scales
    if not isinstance(items, Sequence) or not 1 <= len(items) <= MAX_SCALES:
        raise RetrievalError(f"scales {scales!r}: expected 1 to {MAX_SCALES} numbers")
    low, high = SCALE_RANGE
    out = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise ValueError(item)
            value = float(item.strip() if isinstance(item, str) else item)
        except (TypeError, ValueError):
            raise RetrievalError(f"scales {scales!r}: {item!r} is not a number") from None
        if not (math.isfinite(value) and low < value <= high):
            raise RetrievalError(f"scales {scales!r}: each scale must be above {low:g} and at most {high:g}")
        out.append(value)
    if len(set(out)) != len(out):
        raise RetrievalError(f"scales {scales!r}: a scale is repeated")
    return tuple(sorted(out, reverse=True))


@dataclass(frozen=True)
class ExtractorConfig:
    """Everything needed to rebuild an extractor; stored with each index.

    Fields left at None take the extractor's defaults when it is built.
    """

    kind: str = "bottleneck"  # registry name of the extractor family
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None  # local weights file; None: packaged or published weights
    pooling: str = "gem"  # a name in extractors.pooling.POOLINGS: gem | avg | max | rmac
    pooling_params: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"p": 3.0}; defaults filled in
    image_size: int = 288  # canvas side in pixels (288 beat 224 and matched 320 on Caltech-101)
    resize: str = "letterbox"  # letterbox keeps the aspect ratio; squash is the classic baseline
    # Canvas scales embedded and merged into one descriptor (pooling/multiscale.py); (1.0,): one pass.
    # A config stored before this field existed reads as (1.0,), which embeds exactly as it did.
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pooling_params", POOLINGS.resolve(self.pooling, self.pooling_params))
        object.__setattr__(self, "scales", check_scales(self.scales))
        if self.resize not in RESIZE_MODES:
            raise UnknownNameError(f"unknown resize mode {self.resize!r}; choose {', '.join(RESIZE_MODES)}")
        if not 32 <= self.image_size <= 2048:
            raise RetrievalError(f"image size {self.image_size} out of range (32 to 2048)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractorConfig:
        """Rebuild from a stored dict, ignoring keys this version does not know."""
        d = {**d, "pooling_params": stored_pooling_params(d)}
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Manifest:
    """How an index's vectors were made. Two extractors are compatible iff equal here."""

    config: ExtractorConfig
    dim: int
    weights_digest: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    normalisation: str = "l2"
    extra: dict[str, Any] = field(default_factory=dict)
    # "bf16": the vectors were made in bfloat16 on a CPU (--precision bf16; OpenVINO, or PyTorch
    # on a CPU with native bf16), a choice that changes them (cosine ~0.997 to float32), so the
    # index keeps making them that way and float32 ones are never mixed in. GPU autocast is not
    # recorded: it accumulates in float32 and its vectors fit either kind of index. "int8": made
    # by the graph quantised on the digest of calibration images that extra["int8_calibration"]
    # names (runtimes/quantize.py; cosine ~0.99 to float32), kept and never mixed alike.
    precision: str = "fp32"

    def preprocessor(self) -> Preprocessor:
        """The host-side step that makes this manifest's canvases (picklable: decode workers
        and Ray tasks run it)."""
        from ..images.preprocess import Preprocessor  # Pillow: not for readers of a manifest alone

        return Preprocessor(self.config.image_size, self.config.resize, self.interpolation)

    def identity(self) -> dict[str, Any]:
        """The fields that decide compatibility (a weights *path* does not; its digest does)."""
        d = self.to_dict()
        d["config"].pop("weights", None)
        return d

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["config"]["scales"] = list(self.config.scales)  # as JSON has it, so the dict and its JSON compare equal
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Rebuild from a stored dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["config"] = ExtractorConfig.from_dict(d["config"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)

    def check_compatible(self, other: Manifest, what: str = "extractor") -> None:
        """Raise ExtractorMismatchError naming the first differing fields."""
        mine, theirs = _flatten(self.identity()), _flatten(other.identity())
        diffs = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if diffs:
            detail = "; ".join(f"{k}: index has {mine.get(k)!r}, {what} has {theirs.get(k)!r}" for k in diffs[:3])
            raise ExtractorMismatchError(
                f"the {what} differs from the one this index was built with ({detail}). "
                "Use the index's own extractor, or build a new index."
            )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
