"""The one decode -> batch -> embed loop that indexing, evaluation and both trainers run."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import numpy as np
from PIL import Image

from retrieval.images.batches import DecodedBatch, DecodeGate
from retrieval.images.embedding import EmbedLoop
from retrieval.images.preprocess import Preprocessor

from ..badimages import sample_photos, write_corrupt


@pytest.fixture()
def mixed(tmp_path: Path) -> list[str]:
    """good, missing | corrupt, missing | good: the middle batch of two has no good file."""
    good = [str(p) for p in sample_photos(2)]
    corrupt = str(write_corrupt(tmp_path / "corrupt.jpg"))
    return [good[0], str(tmp_path / "gone.jpg"), corrupt, str(tmp_path / "gone-too.jpg"), good[1]]


def test_the_loop_embeds_good_batches_and_keeps_failures_with_reasons(mixed: list[str]) -> None:
    embedded: list[list[int]] = []
    progress: list[tuple[str, int, int]] = []

    def embed(batch: DecodedBatch) -> torch.Tensor:
        embedded.append(batch.indices)
        return batch.pixels.float().mean((1, 2, 3))

    loop = EmbedLoop(mixed, Preprocessor(32), embed, batch_size=2, progress=lambda *a: progress.append(a),
                     phase="testing")
    outputs = [(batch.indices, None if out is None else len(out)) for batch, out in loop]
    assert outputs == [([0], 1), ([], None), ([4], 1)]  # the all-bad batch is not embedded
    assert embedded == [[0], [4]]
    assert [i for i, _ in loop.failures] == [1, 2, 3]
    reasons = dict(loop.failures)
    assert "not found" in reasons[1] and "not a recognised image format" in reasons[2]
    assert progress == [("testing", 2, 5), ("testing", 4, 5), ("testing", 5, 5)]


def test_the_write_hook_runs_behind_the_loop_one_call_at_a_time(mixed: list[str]) -> None:
    running, most, calls = 0, 0, []
    lock = threading.Lock()

    def write(batch: DecodedBatch, output: torch.Tensor | None) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # a slow commit: the loop must not start a second one meanwhile
        calls.append((threading.current_thread().name, batch.indices, [d.index for d in batch.failures]))
        with lock:
            running -= 1

    loop = EmbedLoop(mixed, Preprocessor(32), lambda b: b.pixels, batch_size=2, write=write)
    loop.run()
    assert most == 1
    assert [(indices, failed) for _, indices, failed in calls] == [([0], [1]), ([], [2, 3]), ([4], [])]
    assert all(name.startswith("batch-writer") for name, *_ in calls)


def test_an_error_in_the_write_hook_surfaces(mixed: list[str]) -> None:
    def write(batch: DecodedBatch, output: object) -> None:
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="disk full"):
        EmbedLoop(mixed, Preprocessor(32), lambda b: b.pixels, batch_size=2, write=write).run()


@dataclass(frozen=True)
class _Clocked:
    """A slow canvas maker (40 ms an image) that notes in a file when each canvas is begun
    (in a loader worker)."""

    log: str
    image_size: int = 32

    def __call__(self, img: Image.Image) -> tuple[np.ndarray, int, int]:
        with open(self.log, "a") as f:
            f.write(f"{time.monotonic()}\n")
        time.sleep(0.04)
        return Preprocessor(self.image_size)(img)


def _overlaps(tmp_path: Path, workers: int) -> tuple[int, int]:
    """(canvases begun, commits running) while the model ran, in a CPU loop of slow model
    calls and slow commits over 16 photos in batches of 2."""
    log = tmp_path / "made.txt"
    log.unlink(missing_ok=True)
    model: list[tuple[float, float]] = []
    writes: list[tuple[float, float]] = []

    def timed(spans: list[tuple[float, float]], seconds: float) -> None:
        start = time.monotonic()
        time.sleep(seconds)
        spans.append((start, time.monotonic()))

    def embed(batch: DecodedBatch) -> torch.Tensor:
        timed(model, 0.2)
        return batch.pixels

    paths = [str(p) for p in sample_photos(2)] * 8
    EmbedLoop(paths, _Clocked(str(log)), embed, batch_size=2, workers=workers,
              write=lambda batch, output: timed(writes, 0.1)).run()
    made = [float(t) for t in log.read_text().split()]
    assert len(made) == len(paths) and len(model) == 8
    margin = 0.1  # a worker past the gate when it closed finishes the image in hand
    decoding = sum(start + margin < t < end for t in made for start, end in model)
    writing = sum(w0 < m1 and m0 < w1 for w0, w1 in writes for m0, m1 in model)
    return decoding, writing


def test_on_the_cpu_workers_decode_and_the_writer_commits_only_while_the_model_waits(tmp_path: Path) -> None:
    assert _overlaps(tmp_path, workers=2) == (0, 0)


def test_without_the_gate_workers_decode_beside_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: with the gate left open, workers decode ahead during the
    model's calls; without workers (no gate), commits run beside the model."""
    monkeypatch.setattr(DecodeGate, "model_running", lambda self: nullcontext())
    assert _overlaps(tmp_path, workers=2)[0] > 0
    assert _overlaps(tmp_path, workers=0)[1] > 0


def test_a_closed_gate_holds_a_worker_for_one_model_call_at_most() -> None:
    gate = DecodeGate()
    gate.PAUSE_LIMIT_S = 0.2
    with gate.model_running():
        start = time.monotonic()
        gate.wait()
        assert 0.15 < time.monotonic() - start < 2
    start = time.monotonic()
    gate.wait()
    assert time.monotonic() - start < 0.1
