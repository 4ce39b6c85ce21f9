"""Decoding JPEGs where the model runs: a batch's compressed bytes in, canvases out.

On a GPU, nvJPEG (through torchvision) decodes a list of JPEGs in one call and the resize
runs there too, so loader workers only read files and check headers, and the copy to the
device carries compressed bytes, several times smaller than the pixels. The same code runs
on the CPU (torchvision's libjpeg-turbo decoder), which is how the tests exercise it.

The canvases match the host path's (:class:`~retrieval.images.Preprocessor`): the same
side, valid size, grey padding and EXIF orientation, resized with the antialiased
bicubic/bilinear filters that reproduce Pillow's. A JPEG the device decoder rejects is
decoded on the host instead, file by file, so one bad file never costs its batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from ..errors import UnknownNameError
from ..options import check_decode_mode
from .batches import Decoded, DecodedBatch, collate_decoded
from .files import FileBytes
from .preprocess import Preprocessor

__all__ = ["decodes_on_device", "decode_jpegs", "finish_batch", "orient", "to_canvases"]

# Decoded pixels per decoder call, and float elements per resize call: device memory stays
# bounded (~0.3 GB and ~0.5 GB) however large the batch or its photos.
DECODE_PIXEL_BUDGET = 100_000_000
RESIZE_ELEMENT_BUDGET = 128_000_000

_PAD = 128  # the canvas grey, as in images.letterbox
_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest-exact"}  # Pillow name -> torch
# EXIF orientation -> flips applied after transposing (orientations 5 to 8 swap the axes):
# the same images ImageOps.exif_transpose gives.
_FLIPS: dict[int, tuple[int, ...]] = {1: (), 2: (-1,), 3: (-2, -1), 4: (-2,), 5: (), 6: (-1,), 7: (-2, -1), 8: (-2,)}

# torchvision 0.29 warns on every call that its decoders move to TorchCodec; they still
# work, and one warning per batch would bury everything else.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def decodes_on_device(mode: str, device: torch.device, interpolation: str = "bicubic") -> bool:
    """Whether JPEGs go to `device` undecoded.

    'auto' does so on a GPU only: on the CPU the loader workers decode files in
    parallel, which beats one thread decoding whole batches. 'device' forces it
    (on the CPU too), 'cpu' never. A Pillow filter with no torch equivalent keeps
    'auto' on the host and makes 'device' fail here, before any file is read.
    """
    check_decode_mode(mode)
    if mode == "cpu" or (mode == "auto" and device.type != "cuda"):
        return False
    if interpolation not in _MODES:
        if mode == "auto":
            return False
        raise UnknownNameError(f"interpolation {interpolation!r} has no device equivalent; use --decode cpu")
    return True


def finish_batch(batch: DecodedBatch, preprocess: Preprocessor, device: torch.device,
                 decode_on_host: Callable[[int, FileBytes], Decoded]) -> DecodedBatch:
    """The batch with its pending JPEGs decoded and every canvas on `device`.

    Args:
        decode_on_host: decodes file `index` from its bytes with Pillow, giving a canvas
            or the reason it failed; used for each JPEG the device decoder rejects (the
            same bytes, so the hash the worker took still describes what is decoded).
    """
    if not batch.jpegs:
        return batch
    decoded: list[Decoded] = []
    canvases: list[torch.Tensor] = []
    rejected: list[Decoded] = []
    for chunk in _chunks(list(zip(batch.jpegs, batch.jpeg_tensors()))):
        images = decode_jpegs([data for _, data in chunk], device)
        upright = [(item, orient(img, item.orientation)) for (item, _), img in zip(chunk, images) if img is not None]
        rejected += [decode_on_host(item.index, _bytes_of(item, data))
                     for (item, data), img in zip(chunk, images) if img is None]
        if upright:
            pixels, sizes = to_canvases([img for _, img in upright], preprocess)
            canvases.append(pixels)
            decoded += [replace(item, valid_h=h, valid_w=w) for (item, _), (h, w) in zip(upright, sizes)]
    host = [b for b in (batch, collate_decoded(rejected)) if b.items]
    parts = [*(b.pixels.to(device, non_blocking=True) for b in host), *canvases]
    return DecodedBatch(
        indices=[*(i for b in host for i in b.indices), *(d.index for d in decoded)],
        pixels=torch.cat(parts) if parts else batch.pixels,
        heights=torch.tensor([*(d.valid_h for b in host for d in b.items), *(d.valid_h for d in decoded)]),
        widths=torch.tensor([*(d.valid_w for b in host for d in b.items), *(d.valid_w for d in decoded)]),
        items=[*(d for b in host for d in b.items), *decoded],
        failures=batch.failures + [d for d in rejected if d.error is not None],
    )


def _bytes_of(item: Decoded, data: torch.Tensor) -> FileBytes:
    """A pending JPEG's bytes as the worker read them, with the facts it took."""
    return FileBytes(data.numpy().tobytes(), item.size, item.mtime_ns, item.content_hash)


def _chunks(pending: list[tuple[Decoded, torch.Tensor]]) -> list[list[tuple[Decoded, torch.Tensor]]]:
    """Consecutive runs of JPEGs whose decoded pixels fit DECODE_PIXEL_BUDGET (at least one each)."""
    chunks: list[list[tuple[Decoded, torch.Tensor]]] = []
    used = DECODE_PIXEL_BUDGET
    for entry in pending:
        pixels = (entry[0].width or 1) * (entry[0].height or 1)
        if used + pixels > DECODE_PIXEL_BUDGET:
            chunks.append([])
            used = 0
        chunks[-1].append(entry)
        used += pixels
    return chunks


def decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """JPEG bytes (1-D uint8 CPU tensors) -> (3, H, W) uint8 RGB images on `device`, as stored.

    The decoder fails a whole call when one file is bad (nvJPEG and libjpeg-turbo
    alike), so a failed call is retried file by file; None marks each file it rejects.
    """
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
    except (RuntimeError, ValueError):  # torch.OutOfMemoryError too: one file at a time needs less
        if len(data) == 1:
            return [None]
    return [image for one in data for image in decode_jpegs([one], device)]


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1 to 8) to a (C, H, W) image, as ImageOps.exif_transpose does."""
    if orientation >= 5:
        image = image.transpose(-2, -1)
    flips = _FLIPS.get(orientation, ())
    return image.flip(flips) if flips else image


def to_canvases(images: list[torch.Tensor], preprocess: Preprocessor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Upright (3, H, W) uint8 images -> (N, S, S, 3) uint8 canvases on their device, and
    each one's valid (height, width).

    Images of one size (common in a photo collection) are resized in one call.
    """
    mode = _MODES[preprocess.interpolation]  # checked by decodes_on_device
    size = preprocess.image_size
    out = torch.full((len(images), size, size, 3), _PAD, dtype=torch.uint8, device=images[0].device)
    fitted = [preprocess.fit(img.shape[-1], img.shape[-2]) for img in images]
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i, (img, (w, h)) in enumerate(zip(images, fitted)):
        groups.setdefault((img.shape[-2], img.shape[-1], h, w), []).append(i)
    for (h0, w0, h, w), members in groups.items():
        step = max(1, RESIZE_ELEMENT_BUDGET // (3 * h0 * w0))
        for start in range(0, len(members), step):
            idx = members[start:start + step]
            x = torch.stack([images[i] for i in idx])
            if (h, w) != (h0, w0):
                smooth = mode != "nearest-exact"
                x = F.interpolate(x.float(), size=(h, w), mode=mode, antialias=smooth,
                                  align_corners=False if smooth else None)
                x = x.round_().clamp_(0, 255).to(torch.uint8)
            out[torch.tensor(idx, device=out.device), :h, :w] = x.permute(0, 2, 3, 1)
    return out, [(h, w) for w, h in fitted]
