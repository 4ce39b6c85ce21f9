"""The one decode -> batch -> embed loop that indexing, evaluation and both trainers run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from retrieval.images.batches import DecodedBatch
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
