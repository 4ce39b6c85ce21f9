"""The forward pass replayed as a CUDA graph: one launch a batch instead of hundreds.

Why: on a GPU the descriptor's forward is a few hundred small kernels, and PyTorch lets go
of the GIL and takes it back around each launch. While indexing, the decode, pinning and
catalog-writer threads of the same process hold the GIL in turn, so each launch can wait a
thread switch (5 ms): on an H200 a batch of 256 that the model alone embeds in 19 ms took
109 ms inside `retrieve index`. A captured graph replays the whole forward with one call,
so the model's thread retakes the GIL a few times a batch, not hundreds; single queries
lose the launch overhead too.

A shape is captured the second time it is seen (the first call runs eagerly, which also
settles cuDNN's choices and lazy initialisation); partial last batches and shapes seen once
stay eager. Capture failures (an out-of-memory error, an operation that cannot be
captured) switch graphs off for that extractor with one warning: eager results are the same.
Capture is thread-local, so the device-decode thread may go on launching its own work.

Off by default: no GPU has run this yet (the session that wrote it lost its GPU lease).
``scripts/bench_index.py --graphs on`` turns it on, times the eager forward beside it and
compares graph and eager vectors of real photos; it becomes the default on CUDA once that
shows the same vectors and a faster `retrieve index`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["GraphedForward", "MAX_GRAPHS"]

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Key = tuple[tuple[int, ...], torch.dtype]

MAX_GRAPHS = 4
"""Shapes captured at most per extractor (each keeps its activations' memory): indexing's
batch, the single query, and a couple of batch sizes a server sees often."""


@dataclass
class _Graph:
    """A captured forward and the static tensors it reads and writes."""

    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    output: torch.Tensor


def capture(fn: Forward, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> _Graph:
    """Capture `fn` over copies of `inputs` (warmed up on a side stream, as CUDA requires)."""
    static = tuple(t.clone() for t in inputs)
    side = torch.cuda.Stream(device=static[0].device)
    side.wait_stream(torch.cuda.current_stream(static[0].device))
    with torch.cuda.stream(side):
        for _ in range(2):
            fn(*static)
    torch.cuda.current_stream(static[0].device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        output = fn(*static)
    return _Graph(graph, (static[0], static[1], static[2]), output)


class GraphedForward:
    """Calls `fn(pixels, heights, widths)` (device tensors), through CUDA graphs where it can.

    Thread-safe: the static tensors of a graph are shared, so replays are serialised (the
    GPU runs them one after the other anyway). `capture_fn` is what captures a shape
    (:func:`capture`; replaced in tests that run without a GPU).
    """

    def __init__(self, fn: Forward, device: torch.device, capture_fn: Callable[..., _Graph] = capture) -> None:
        self.fn, self.device, self._capture = fn, device, capture_fn
        self.enabled = False
        self._graphs: dict[Key, _Graph] = {}
        self._seen: set[Key] = set()
        self._lock = threading.Lock()

    def enable(self, on: bool = True) -> bool:
        """Use graphs from the next call (only on a CUDA device); whether they are on."""
        self.enabled = on and self.device.type == "cuda"
        return self.enabled

    def __call__(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.fn(pixels, heights, widths)
        key = (tuple(pixels.shape), pixels.dtype)
        with self._lock:
            graph = self._graphs.get(key) or self._capture_second_sight(key, (pixels, heights, widths))
            if graph is None:
                return self.fn(pixels, heights, widths)
            for static, given in zip(graph.inputs, (pixels, heights, widths)):
                static.copy_(given, non_blocking=True)
            graph.graph.replay()
            return graph.output.clone()  # queued before any later replay overwrites the output

    def _capture_second_sight(self, key: Key, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                              ) -> _Graph | None:
        """The graph for `key` if this is its second sighting and capture works, else None."""
        if key not in self._seen or len(self._graphs) >= MAX_GRAPHS:
            self._seen.add(key)
            return None
        try:
            graph = self._capture(self.fn, inputs)
        except RuntimeError as e:  # what a failed capture raises (torch.OutOfMemoryError is one)
            self.enabled = False
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("CUDA graphs off for this model (%s); running it eagerly", str(e).splitlines()[0][:200])
            return None
        self._graphs[key] = graph
        return graph
