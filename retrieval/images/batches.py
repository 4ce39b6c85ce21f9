"""The decode -> batch step: files read and decoded in loader workers, collated into uint8
batches with their failures, ready for an extractor (:mod:`.embedding` runs the model
over them)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..catalog.facts import PhotoFacts
from ..errors import BadImageError
from .decode import MAX_PIXELS, DecodedImage, EncodedJpeg, load_image, load_image_or_jpeg
from .exif import read_facts
from .files import FileBytes, read_file
from .preprocess import CanvasMaker, Preprocessor

__all__ = ["Decoded", "DecodeDataset", "DecodeGate", "LocalExtract", "DecodedBatch", "collate_decoded", "decode_loader",
           "default_workers"]


class DecodeGate:
    """Holds decode workers back while the model runs on the same CPU cores.

    A model on the CPU uses every core (one intra-op thread each); a worker decoding beside
    it preempts one of those threads and the others wait for it at the end of each
    operator, so on this project's 2-core machine each millisecond of decoding cost the
    model about a millisecond of wall time. Decoding only while the model waits for its
    next batch puts both cores on it then. Measured (scripts/bench_overlap.py and
    bench_runtime.py, OpenVINO, 2 workers, 1,000 photos): the bare loop 11.96 s beside,
    11.65 s gated, 11.00 s when everything is decoded first; the indexer, whose commits
    also wait for the model's gaps, 0.80x its model alone before and 0.88x after (median
    of 4 alternating runs).

    Made in the main process before the workers start (they inherit its event); a worker
    checks it before each file, so it finishes the image in hand and then waits.
    """

    PAUSE_LIMIT_S = 10.0
    """A worker waits at most this long for one model call: a worker whose parent died
    while the gate was closed then reaches its loader's check for a dead parent."""

    def __init__(self) -> None:
        self._open = multiprocessing.Event()
        self._open.set()

    def wait(self) -> None:
        """Return once the model is not running (or after :data:`PAUSE_LIMIT_S`)."""
        self._open.wait(self.PAUSE_LIMIT_S)

    @contextmanager
    def model_running(self) -> Iterator[None]:
        """Workers pause while this block runs (the model's call)."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()


@dataclass(frozen=True)
class LocalExtract:
    """Local features of a decoded image as the bytes the catalog stores, made in the
    loader worker beside its canvas (picklable: `extract` is a frozen dataclass's method).

    `side`: the long side the extractor looks at, so a JPEG is decoded at least that large.
    """

    extract: Callable[[Any], Any]  # PIL image -> LocalFeatures
    side: int

    def __call__(self, image: Any) -> bytes:
        return self.extract(image).to_bytes()


@dataclass(frozen=True)
class Decoded:
    """One decode result: a canvas with its facts, a JPEG's bytes for the device, or the
    reason it failed.

    `content_hash`, `size` and `mtime_ns` describe the bytes that were decoded (empty
    when the file could not be read): what the catalog stores with the vector.
    """

    index: int
    pixels: np.ndarray | None = None
    valid_h: int = 0
    valid_w: int = 0
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    jpeg: bytes | None = None  # set instead of pixels: to be decoded on the device
    orientation: int = 1  # EXIF orientation still to apply to the decoded `jpeg`
    content_hash: str = ""
    size: int = 0
    mtime_ns: int = 0
    local: bytes | None = None  # the image's local features, when the dataset extracts them
    photo: PhotoFacts | None = None  # what its EXIF says, when the dataset reads it


class DecodeDataset(torch.utils.data.Dataset):
    """Reads, decodes and preprocesses files by position; a bad file yields an error, not a raise.

    Each file is read once (bounded, regular files only) and hashed and decoded from the
    same bytes, so a file replaced meanwhile can never pair one content's hash with
    another's pixels. With `jpeg_bytes`, JPEGs that a device decoder takes are only read
    and their headers checked (see :func:`load_image_or_jpeg`): the worker's share of the
    work shrinks to file reading, and decoding and resizing happen in batches on the device.
    With `exif`, the photo's EXIF facts are read from the same bytes too (the indexer stores
    them): here, in parallel, rather than by the one thread that writes the catalog.
    With `gate`, each file waits until the model is not running (see :class:`DecodeGate`).
    """

    def __init__(self, paths: list[str], preprocess: CanvasMaker, max_pixels: int = MAX_PIXELS,
                 jpeg_bytes: bool = False, local: LocalExtract | None = None, exif: bool = False,
                 gate: DecodeGate | None = None) -> None:
        self.paths = paths
        self.exif = exif
        self.gate = gate
        # Workers have PyTorch loaded: its resize is 5x Pillow's (see images.preprocess)
        self.preprocess = replace(preprocess, resizer="torch") if isinstance(preprocess, Preprocessor) else preprocess
        self.max_pixels = max_pixels
        self.jpeg_bytes = jpeg_bytes and local is None  # local features need the host's pixels
        self.local = local
        # JPEGs decode at a reduced scale (a draft) when that still covers what is made of them
        self.draft_size = max(preprocess.image_size, local.side if local is not None else 0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        if self.gate is not None:
            self.gate.wait()
        try:
            raw = read_file(self.paths[i])
        except BadImageError as e:
            return Decoded(i, error=str(e))
        if not self.jpeg_bytes:
            return self.decode_on_host(i, raw)
        try:
            got = load_image_or_jpeg(raw, self.max_pixels, draft_size=self.draft_size)
        except BadImageError as e:
            return Decoded(i, error=str(e), **_stored(raw))
        if isinstance(got, EncodedJpeg):
            return Decoded(i, width=got.width, height=got.height, format="JPEG", jpeg=got.data,
                           orientation=got.orientation, **self._facts(raw))
        return self._canvas(i, got, raw)

    def decode_on_host(self, i: int, raw: FileBytes) -> Decoded:
        """File `i`'s bytes decoded and preprocessed here, whatever its format: also the
        fallback for a JPEG the device decoder rejects (given the bytes it rejected)."""
        try:
            return self._canvas(i, load_image(raw, self.max_pixels, draft_size=self.draft_size), raw)
        except BadImageError as e:
            return Decoded(i, error=str(e), **_stored(raw))

    def _canvas(self, i: int, img: DecodedImage, raw: FileBytes) -> Decoded:
        pixels, h, w = self.preprocess(img.image)
        local = self.local(img.image) if self.local is not None else None
        return Decoded(i, pixels, h, w, img.width, img.height, img.format, local=local, **self._facts(raw))

    def _facts(self, raw: FileBytes) -> dict[str, Any]:
        """What is stored about a decoded file's bytes: their hash and stat, and EXIF if asked."""
        return {**_stored(raw), "photo": read_facts(raw.data) if self.exif else None}


def _stored(raw: FileBytes) -> dict[str, Any]:
    """The hash and stat of the bytes a worker read, stored with whatever came of them."""
    return {"content_hash": raw.digest, "size": raw.size, "mtime_ns": raw.mtime_ns}


@dataclass
class DecodedBatch:
    """A collated batch: stacked canvases of the good files, the JPEGs still to decode on
    the device, and the failures.

    The JPEGs' bytes travel packed in one tensor (one shared-memory block from a loader
    worker, not one per file); :meth:`jpeg_tensors` gives each file's bytes as a view.
    """

    indices: list[int]
    pixels: torch.Tensor  # (N, S, S, 3) uint8
    heights: torch.Tensor  # (N,)
    widths: torch.Tensor
    items: list[Decoded]
    failures: list[Decoded]
    jpegs: list[Decoded] = field(default_factory=list)  # facts and orientation; bytes in jpeg_data
    jpeg_data: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    jpeg_spans: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) per jpeg

    def jpeg_tensors(self) -> list[torch.Tensor]:
        """Each pending JPEG's bytes, a 1-D uint8 view into `jpeg_data`."""
        return [self.jpeg_data[start:start + length] for start, length in self.jpeg_spans]

    def pin_memory(self) -> DecodedBatch:
        """Called by a pinning DataLoader: page-locked canvases copy to a GPU asynchronously.

        Without this method the loader would hand the dataclass back unpinned.
        """
        self.pixels = self.pixels.pin_memory()
        return self


def collate_decoded(items: list[Decoded]) -> DecodedBatch:
    """Stack the canvases of a batch, pack its pending JPEGs, keep failures aside with their reasons."""
    canvases = [(d, d.pixels) for d in items if d.error is None and d.pixels is not None]
    good = [d for d, _ in canvases]
    encoded = [(d, d.jpeg) for d in items if d.error is None and d.jpeg is not None]
    pending = [d for d, _ in encoded]
    bad = [d for d in items if d.error is not None]
    if canvases:
        pixels = torch.from_numpy(np.stack([p for _, p in canvases]))
    else:
        pixels = torch.empty(0, 0, 0, 3, dtype=torch.uint8)
    lengths = [len(jpeg) for _, jpeg in encoded]
    offsets = np.cumsum([0, *lengths[:-1]]).tolist() if pending else []
    data = np.empty(sum(lengths), np.uint8)
    for (_, jpeg), start, length in zip(encoded, offsets, lengths):
        data[start:start + length] = np.frombuffer(jpeg, np.uint8)
    return DecodedBatch(
        indices=[d.index for d in good],
        pixels=pixels,
        heights=torch.tensor([d.valid_h for d in good], dtype=torch.int64),
        widths=torch.tensor([d.valid_w for d in good], dtype=torch.int64),
        items=[replace(d, pixels=None) for d in good],
        failures=bad,
        jpegs=[replace(d, jpeg=None) for d in pending],
        jpeg_data=torch.from_numpy(data),
        jpeg_spans=list(zip(offsets, lengths)),
    )


GPU_WORKERS_MAX = 16
"""Decode workers feeding a GPU at most: a GPU embeds ~13,000 images/s and one worker reads
and decodes a few hundred, so a GPU wants every core the process can spare."""


def default_workers(requested: int | None = None, device: torch.device | None = None) -> int:
    """Decode worker processes: as requested; else, feeding a CUDA `device`, one per core
    but two (the model's thread and the catalog writer's), at most :data:`GPU_WORKERS_MAX`;
    else one per core, at most 4 (on the CPU the model shares those cores and is the
    bottleneck well before decoding)."""
    if requested is not None:
        return requested
    cores = os.cpu_count() or 1
    if device is not None and device.type == "cuda":
        return max(1, min(GPU_WORKERS_MAX, cores - 2))
    return min(4, cores)


def decode_loader(dataset: DecodeDataset, workers: int, pin: bool, batch_size: int | None = None,
                  batch_sampler: torch.utils.data.Sampler[list[int]] | None = None,
                  ) -> torch.utils.data.DataLoader[DecodedBatch]:
    """Batches of `dataset` decoded in `workers` processes, a few batches ahead; `pin` puts
    the canvases in pinned memory for non-blocking copies to a GPU. `batch_sampler`, when
    given, replaces consecutive batches of `batch_size`."""
    batching: dict[str, Any] = {"batch_sampler": batch_sampler} if batch_sampler is not None else \
        {"batch_size": batch_size}
    return torch.utils.data.DataLoader(dataset, num_workers=workers, collate_fn=collate_decoded, pin_memory=pin,
                                       prefetch_factor=4 if workers else None, **batching)
