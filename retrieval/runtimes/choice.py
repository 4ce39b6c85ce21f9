"""``--runtime auto`` on the CPU: the fastest installed runtime whose vectors agree with
PyTorch's, measured once per extractor and machine, and remembered.

The measurement is cheap on purpose: the graph has to be exported on first use anyway,
and then one probe batch (8 canvases of structured synthetic images, letterboxed to
varied sizes) runs once to warm up and twice timed in PyTorch and in each installed
runtime. A runtime qualifies when every probe vector has a cosine of at least
:data:`MIN_COSINE` with PyTorch's; the fastest that qualifies wins (PyTorch itself when
none does). The decision is stored in the cache folder under a key of the extractor's
identity, the CPU, the cores and the runtimes' versions, so a new machine, a runtime
upgrade or another extractor measures again, and every later start of the same one
loads the cached graph without building the PyTorch model at all.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..extractors.base import Extractor
from ..extractors.config import ExtractorConfig, Manifest
from .cache import cache_root, graph_key, write_atomic
from ..errors import RetrievalError
from .graphs import graph_extractor
from .session import RUNTIMES, installed, runtime_version

if TYPE_CHECKING:
    import torch

__all__ = ["MIN_COSINE", "Decision", "Decisions", "auto_extractor", "fastest_agreeing", "measure", "probe_batch"]

log = logging.getLogger(__name__)

MIN_COSINE = 0.9999  # a runtime's float32 vectors against PyTorch's, per probe image
PROBE_IMAGES = 8
TORCH = "torch"


def probe_batch(size: int, count: int = PROBE_IMAGES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`count` canvases of smooth random scenes with fine noise (not flat noise, whose
    descriptors would all look alike), letterboxed at varied aspect ratios."""
    import torch  # only a measurement needs it: a remembered choice loads its graph without PyTorch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(16)
    coarse = torch.rand(count, 3, 6, 6, generator=gen)
    scene = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    scene = scene + 0.08 * torch.randn(count, 3, size, size, generator=gen)
    pixels = (scene.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    fractions = torch.linspace(0.5, 1.0, count)
    heights = torch.full((count,), size, dtype=torch.int64)
    widths = (fractions * size).round().to(torch.int64)
    heights[::2], widths[::2] = widths[::2], size  # half of them tall, half wide
    for i in range(count):
        pixels[i, int(heights[i]):, :] = 128
        pixels[i, :, int(widths[i]):] = 128
    return pixels, heights, widths


def _seconds(extractor: Extractor, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[float, np.ndarray]:
    """Best of two timed runs after a warm-up, and the vectors."""
    vectors = extractor.embed(*batch)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        extractor.embed(*batch)
        best = min(best, time.perf_counter() - start)
    return best, vectors


def measure(reference: Extractor, candidates: dict[str, Extractor]) -> dict[str, dict[str, float]]:
    """Images/s of `reference` (PyTorch, under "torch") and each candidate on one probe
    batch, and each candidate's lowest cosine with the reference's vectors."""
    batch = probe_batch(reference.manifest.config.image_size)
    seconds, expected = _seconds(reference, batch)
    results = {TORCH: {"images_per_s": len(expected) / seconds, "min_cosine": 1.0}}
    for name, extractor in candidates.items():
        seconds, got = _seconds(extractor, batch)
        results[name] = {"images_per_s": len(got) / seconds, "min_cosine": float((got * expected).sum(1).min())}
    return results


def fastest_agreeing(measured: dict[str, dict[str, float]]) -> str:
    """The runtime with the most images/s among those whose vectors agree with PyTorch's
    (PyTorch itself, measured as "torch", always does)."""
    fit = [name for name in measured if name == TORCH or measured[name]["min_cosine"] >= MIN_COSINE]
    return max(fit, key=lambda name: measured[name]["images_per_s"])


@dataclass
class Decision:
    """The runtime chosen for one extractor on this machine, and what it was chosen on."""

    runtime: str
    measured: dict[str, dict[str, float]]


def _machine() -> dict[str, Any]:
    """What makes a measurement stale: the CPU, the cores and the runtimes' versions."""
    from .threads import intra_op_threads

    model = platform.processor()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "machine": platform.machine(), "threads": intra_op_threads(),
            "torch": importlib.metadata.version("torch"),
            **{name: runtime_version(name) for name in RUNTIMES if installed(name)}}


class Decisions:
    """The remembered choices: one JSON file, rewritten atomically (a lost update between
    two processes only costs a second measurement)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_root() / "runtime-choice.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Decision | None:
        entry = self._read().get(key)
        if isinstance(entry, dict) and entry.get("runtime") in (TORCH, *RUNTIMES):
            return Decision(entry["runtime"], entry.get("measured", {}))
        return None

    def put(self, key: str, decision: Decision) -> None:
        data = self._read()
        data[key] = {"runtime": decision.runtime, "measured": decision.measured, "when": time.strftime("%Y-%m-%d")}
        try:
            write_atomic(self.path, lambda p: p.write_text(json.dumps(data, indent=1, sort_keys=True)))
        except OSError as e:  # a read-only cache costs a measurement per start, not the run
            log.warning("cannot remember the runtime choice in %s: %s", self.path, e)


def _build_torch(config: ExtractorConfig) -> Extractor:
    from ..extractors import create_extractor

    return create_extractor(config, "cpu", "fp32")


def auto_extractor(config: ExtractorConfig, known: Manifest | None, threads: int) -> Extractor:
    """The extractor `--runtime auto` runs on the CPU in float32 (see the module's doc).

    Args:
        known: the manifest the extractor must have (an existing index's): with a
            remembered choice and its graph cached, the PyTorch model is not built.
    """
    names = [name for name in RUNTIMES if installed(name)]
    if not names:
        return _build_torch(config)
    decisions, machine = Decisions(), _machine()

    def key(manifest: Manifest) -> str:
        return graph_key("choice", {"extractor": manifest.identity(), "machine": machine})

    remembered = decisions.get(key(known)) if known is not None else None
    if remembered is not None and remembered.runtime != TORCH and known is not None:
        warm = graph_extractor(remembered.runtime, known, None, threads)
        if warm is not None:
            return warm
    reference = _build_torch(config)
    remembered = remembered or decisions.get(key(reference.manifest))
    if remembered is not None:
        if remembered.runtime == TORCH:
            return reference
        return graph_extractor(remembered.runtime, reference.manifest, reference, threads) or reference
    candidates: dict[str, Extractor] = {}
    for name in names:
        try:
            built = graph_extractor(name, reference.manifest, reference, threads)
        except RetrievalError as e:  # auto falls back; an explicit --runtime reports it
            log.warning("runtime %s left out: %s", name, e)
            continue
        if built is not None:
            candidates[name] = built
    measured = measure(reference, candidates)
    chosen = fastest_agreeing(measured)
    log.info("runtime auto: %s (%s)", chosen, ", ".join(f"{n} {m['images_per_s']:.1f} images/s, cosine "
                                                        f"{m['min_cosine']:.6f}" for n, m in measured.items()))
    decisions.put(key(reference.manifest), Decision(chosen, measured))
    return reference if chosen == TORCH else candidates[chosen]
