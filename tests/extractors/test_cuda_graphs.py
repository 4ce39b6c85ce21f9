"""GraphedForward's bookkeeping: which calls run eagerly, which capture, which replay.

CUDA itself is not here (CI has no GPU): the capture step is replaced by one that records
the forward's static tensors the way a graph does, so replays must read the copied inputs
and return the output of the replayed call. The real capture is checked on a GPU by
scripts/bench_index.py (graph and eager vectors compared on real photos).
"""

from __future__ import annotations

import logging
import threading

import pytest
import torch

from retrieval.extractors.cuda_graphs import MAX_GRAPHS, GraphedForward, _Graph


CUDA = torch.device("cuda")  # only compared, never used: the capture step is a fake


def _on(graphed: GraphedForward) -> GraphedForward:
    assert graphed.enable()
    return graphed


class FakeGraph:
    """Replays `fn` over the static inputs into the static output, like a CUDA graph."""

    def __init__(self, fn, inputs, output) -> None:
        self.fn, self.inputs, self.output = fn, inputs, output

    def replay(self) -> None:
        self.output.copy_(self.fn(*self.inputs))


def forward(pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    return pixels.float().mean(dim=(1, 2)) + heights[:, None] - widths[:, None]


def batch(n: int, seed: int, side: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=g),
            torch.randint(1, side + 1, (n,), generator=g), torch.randint(1, side + 1, (n,), generator=g))


class Recorder:
    def __init__(self, fail: Exception | None = None) -> None:
        self.captured: list[tuple[int, ...]] = []
        self.fail = fail

    def __call__(self, fn, inputs) -> _Graph:
        if self.fail is not None:
            raise self.fail
        self.captured.append(tuple(inputs[0].shape))
        static = tuple(t.clone() for t in inputs)
        output = fn(*static)
        return _Graph(FakeGraph(fn, static, output), static, output)  # type: ignore[arg-type]


def test_second_sighting_captures_and_replays_give_each_batchs_own_result() -> None:
    rec = Recorder()
    graphed = _on(GraphedForward(forward, CUDA, capture_fn=rec))
    first, second, third = batch(8, 0), batch(8, 1), batch(8, 2)
    assert torch.equal(graphed(*first), forward(*first))
    assert rec.captured == []  # seen once: eager
    assert torch.equal(graphed(*second), forward(*second))
    assert rec.captured == [(8, 4, 4, 3)]
    out3 = graphed(*third)
    assert torch.equal(out3, forward(*third))  # a replay over the copied inputs, not the captured ones
    assert rec.captured == [(8, 4, 4, 3)]  # no second capture of the same shape
    graphed(*batch(8, 3))
    assert torch.equal(out3, forward(*third)), "a result must not be overwritten by a later replay"


def test_partial_batches_stay_eager_and_shapes_are_capped() -> None:
    rec = Recorder()
    graphed = _on(GraphedForward(forward, CUDA, capture_fn=rec))
    for n in range(1, MAX_GRAPHS + 3):
        for seed in range(3):
            x = batch(n, seed)
            assert torch.equal(graphed(*x), forward(*x))
    assert len(rec.captured) == MAX_GRAPHS
    graphed(*batch(99, 0))  # a batch size seen once (a last, partial batch)
    assert all(shape[0] != 99 for shape in rec.captured)


def test_a_failed_capture_turns_graphs_off_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail=RuntimeError("operation not permitted when stream is capturing\nmore"))
    graphed = _on(GraphedForward(forward, CUDA, capture_fn=rec))
    with caplog.at_level(logging.WARNING):
        for seed in range(4):
            x = batch(4, seed)
            assert torch.equal(graphed(*x), forward(*x))
    assert not graphed.enabled
    warnings = [r for r in caplog.records if "CUDA graphs off" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


def test_disabled_never_captures() -> None:
    rec = Recorder()
    graphed = GraphedForward(forward, CUDA, capture_fn=rec)  # not enabled
    for seed in range(3):
        graphed(*batch(2, seed))
    assert rec.captured == []


def test_concurrent_callers_each_get_their_own_result() -> None:
    graphed = _on(GraphedForward(forward, CUDA, capture_fn=Recorder()))
    graphed(*batch(4, 0))
    graphed(*batch(4, 1))  # captured
    errors: list[int] = []

    def worker(seed: int) -> None:
        for k in range(30):
            x = batch(4, seed * 100 + k)
            if not torch.equal(graphed(*x), forward(*x)):
                errors.append(seed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_graphs_are_off_by_default_and_for_cuda_only(extractor) -> None:
    assert extractor.device.type == "cpu" and extractor.graphs.enabled is False
    assert extractor.graphs.enable() is False
    assert GraphedForward(forward, CUDA).enable() is True
