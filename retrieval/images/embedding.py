"""The one decode -> batch -> embed loop: indexing, evaluation queries and both trainers
run their model over image files through :class:`EmbedLoop`.

Files are read and decoded in loader workers (:mod:`.batches`), each batch with at least
one good image goes through the caller's `embed` step, progress is reported per batch and
failures are kept with their reasons. Two optional hooks make the same loop the indexing
pipeline: `decode="device"` finishes each batch's JPEGs on the model's device in a helper
thread, one batch ahead, and `write` runs in a writer thread while the next batch embeds,
or, on the CPU with decode workers, while the model waits for it (decoding then waits for
those gaps too: :class:`~.batches.DecodeGate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Generic, TypeVar

import torch

from ..options import Progress
from .batches import DecodeDataset, DecodedBatch, DecodeGate, LocalExtract, decode_loader
from .device import decodes_on_device, finish_batch
from .preprocess import CanvasMaker, Preprocessor

__all__ = ["EmbedLoop", "STAGES"]

STAGES = ("waiting_for_decoding", "model", "waiting_for_the_writer", "writing")
"""The loop's timings: the model's thread waiting for a decoded batch, in the forward pass,
and blocked on the previous batch's write; and the writer thread's own busy time."""

R = TypeVar("R")
T = TypeVar("T")

_CPU = torch.device("cpu")


class EmbedLoop(Generic[R]):
    """Run `embed` over the decoded batches of `paths`; iterate for (batch, output) pairs.

    The output is None for a batch in which no file decoded (its failures still come
    through). During and after a pass, :attr:`failures` holds (position in `paths`,
    reason) for every file that could not be read or decoded so far.

    Args:
        embed: the model step, called with each batch that has good canvases.
        preprocess: the canvas maker run in the workers (an augmentation for training).
        device: where the model runs; canvases are pinned for a CUDA device.
        decode: where JPEGs are decoded (see :func:`~retrieval.images.device.decodes_on_device`);
            only a plain :class:`Preprocessor`'s canvases can be made on the device.
        batch_sampler: replaces consecutive batches of `batch_size` (P x K training batches).
        progress: called as progress(phase, done, total) after each batch.
        write: called with each batch and its output in a writer thread, at most one
            call in flight (so memory stays bounded and its errors surface at the next).
        local: extracts each image's local features in the workers too (items carry them
            as bytes); JPEGs are then decoded on the host, which has to see the pixels.
        exif: the workers read each image's EXIF facts too (items carry them).
    """

    def __init__(self, paths: Sequence[str], preprocess: CanvasMaker, embed: Callable[[DecodedBatch], R], *,
                 batch_size: int = 32, workers: int = 0, device: torch.device = _CPU,
                 decode: str = "cpu", batch_sampler: torch.utils.data.Sampler[list[int]] | None = None,
                 progress: Progress | None = None, phase: str = "embedding",
                 write: Callable[[DecodedBatch, R | None], None] | None = None,
                 local: LocalExtract | None = None, exif: bool = False) -> None:
        self.paths, self.preprocess, self.embed, self.local, self.exif = list(paths), preprocess, embed, local, exif
        self.batch_size, self.workers, self.device, self.decode = batch_size, workers, device, decode
        self.batch_sampler, self.progress, self.phase, self.write = batch_sampler, progress, phase, write
        self.failures: list[tuple[int, str]] = []
        self.timings: dict[str, float] = {}

    def __iter__(self) -> Iterator[tuple[DecodedBatch, R | None]]:
        pre = self.preprocess
        # The device resizes too, so it needs the plain Preprocessor (its filter and fit).
        device_pre = pre if isinstance(pre, Preprocessor) and self.local is None and \
            decodes_on_device(self.decode, self.device, pre.interpolation) else None
        # On the CPU the workers decode only while the model waits for a batch (DecodeGate)
        gate = DecodeGate() if self.device.type == "cpu" and self.workers > 0 else None
        dataset = DecodeDataset(self.paths, pre, jpeg_bytes=device_pre is not None, local=self.local, exif=self.exif,
                                gate=gate)
        loader = decode_loader(dataset, self.workers, self.device.type == "cuda", self.batch_size, self.batch_sampler)
        batches: Iterable[DecodedBatch] = loader
        if device_pre is not None:
            batches = _one_ahead(loader, lambda b: finish_batch(b, device_pre, self.device, dataset.decode_on_host))
        self.failures, done = [], 0
        # Where the loop's time goes (wall seconds; "writing" in the writer thread, beside the
        # others): the stage that fills the wall is the bottleneck. Reported by `retrieve index -v`.
        times = self.timings = dict.fromkeys(STAGES, 0.0)
        with _writer(self.write, times) as writer:
            pending = iter(batches)
            while True:
                t0 = time.perf_counter()
                batch = next(pending, None)
                t1 = time.perf_counter()
                times["waiting_for_decoding"] += t1 - t0
                if batch is None:
                    break
                if gate is not None:  # the last batch's commit does not compete with the model either
                    writer.wait()
                    t1, waited = time.perf_counter(), t1
                    times["waiting_for_the_writer"] += t1 - waited
                with gate.model_running() if gate is not None else nullcontext():
                    output = self.embed(batch) if batch.indices else None
                t2 = time.perf_counter()
                times["model"] += t2 - t1
                self.failures += [(d.index, d.error or "") for d in batch.failures]
                writer.submit(batch, output)
                times["waiting_for_the_writer"] += time.perf_counter() - t2
                yield batch, output
                done += len(batch.indices) + len(batch.failures)
                if self.progress:
                    self.progress(self.phase, done, len(self.paths))

    def run(self) -> None:
        """Go through every batch, for a loop whose `write` hook keeps what it needs."""
        for _ in self:
            pass


class _Writer(Generic[R]):
    """Runs `write` in a writer thread, one call in flight; without `write`, does nothing.
    The writer's busy time adds up in ``times["writing"]``."""

    def __init__(self, write: Callable[[DecodedBatch, R | None], None], times: dict[str, float],
                 pool: ThreadPoolExecutor | None) -> None:
        self.write, self.times, self.pool = write, times, pool
        self.pending: Future[None] | None = None

    def submit(self, batch: DecodedBatch, output: R | None) -> None:
        """Hand this batch to the writer thread, once the previous call is done."""
        if self.pool is None:
            return
        self.wait()
        self.pending = self.pool.submit(self._timed, batch, output)

    def wait(self) -> None:
        """Return when the call in flight is done; raise what it raised."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def _timed(self, batch: DecodedBatch, output: R | None) -> None:
        start = time.perf_counter()
        try:
            self.write(batch, output)
        finally:
            self.times["writing"] += time.perf_counter() - start


@contextmanager
def _writer(write: Callable[[DecodedBatch, R | None], None] | None, times: dict[str, float]) -> Iterator[_Writer[R]]:
    """A :class:`_Writer` whose last call is waited for on exit."""
    if write is None:
        yield _Writer(lambda batch, output: None, times, None)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="batch-writer") as pool:
        writer = _Writer(write, times, pool)
        yield writer
        writer.wait()


def _one_ahead(items: Iterable[T], fn: Callable[[T], R]) -> Iterator[R]:
    """`fn` over `items` in a helper thread, one result ahead of the caller.

    Device decoding of the next batch then overlaps the embedding of this one (both
    mostly wait on the GPU, outside the GIL), at the cost of one more batch in memory.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="device-decode") as helper:
        ahead: Future[R] | None = None
        for item in items:
            following = helper.submit(fn, item)
            if ahead is not None:
                yield ahead.result()
            ahead = following
        if ahead is not None:
            yield ahead.result()
