"""Training the denoising autoencoder: corrupted patches in, clean patches out.

Images are letterboxed once to the canvas size the extractor uses, since that is the
scale at which the denoiser will meet them, and kept in memory as uint8. Each step
cuts random patches from them, corrupts each by one kind drawn among those turned on
(at a random level up to the maximum set), and regresses the clean patch (mean squared
error). Validation is the PSNR of the output on a fixed set of corrupted patches from
held-out images; the checkpoint keeps the epoch with the best.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import RetrievalError
from ..evaluation.labels import read_images
from ..extractors.autoencoder import DenoisingAutoencoder
from ..images.batches import default_workers
from ..images.embedding import EmbedLoop
from ..images.preprocess import Preprocessor
from ..options import Progress, autocast, resolve_device, resolve_precision
from .corruptions import CorruptionSettings, random_corruption
from .loop import OnEpoch, Stepper, TrainResult, fit, seed_everything

__all__ = ["AutoencoderSettings", "train_autoencoder", "psnr"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoencoderSettings:
    """Everything an autoencoder run depends on; stored in the checkpoint, checked on resume."""

    epochs: int = 8
    steps_per_epoch: int = 150
    width: int = 16  # channels of the first level (doubling per level)
    levels: int = 3  # stride-2 stages down to the code
    patch: int = 96  # side of the training patches
    batch_size: int = 32
    lr: float = 2e-3  # Adam, cosine decay
    image_size: int = 288  # canvas side images are letterboxed to: the scale noise is learned at
    resize: str = "letterbox"
    corruptions: CorruptionSettings = CorruptionSettings()
    max_images: int = 2000  # training canvases kept in memory (a random subset beyond that)
    val_fraction: float = 0.1
    val_patches: int = 256
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if min(self.epochs, self.steps_per_epoch, self.batch_size, self.val_patches, self.max_images) < 1:
            raise RetrievalError("epochs, steps per epoch, batch size, validation patches, max images must be 1+")
        if not 8 <= self.patch <= self.image_size:
            raise RetrievalError(f"patch side {self.patch} must be between 8 and the image size {self.image_size}")


def train_autoencoder(data: str | os.PathLike[str] | list[str], out: str | os.PathLike[str],
                      settings: AutoencoderSettings = AutoencoderSettings(), *, resume: bool = False,
                      keep_resume: bool = False, progress: Progress | None = None,
                      on_epoch: OnEpoch | None = None) -> TrainResult:
    """Train a denoising autoencoder on the images below `data` and write its checkpoint to `out`.

    Args:
        data: a folder of images (searched recursively), a list file of paths, or paths.
        resume: continue the run saved in `out` (same settings; epochs may grow).
        keep_resume: when done, keep what a resume needs (see :func:`.loop.fit`).

    Raises:
        RetrievalError: fewer than two readable images, every corruption off, or `out`
            holds a checkpoint and `resume` is False.
    """
    paths = list(data) if isinstance(data, list) else read_images(data)
    if len(paths) < 2:
        raise RetrievalError("the autoencoder needs at least 2 images (some are held out for validation)")
    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(paths), generator=gen).tolist()
    n_val = max(1, round(len(paths) * settings.val_fraction))
    val_paths = [paths[i] for i in order[:n_val]]
    train_paths = [paths[i] for i in order[n_val:]][: settings.max_images]
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    workers = default_workers(settings.workers)
    pre = Preprocessor(settings.image_size, settings.resize, "bicubic")
    train_set = _Canvases.load(train_paths, pre, workers, progress, "loading")
    val_set = _Canvases.load(val_paths, pre, workers, progress, "validation")
    val_gen = torch.Generator().manual_seed(settings.seed + 1)
    val_clean = val_set.patches(settings.val_patches, settings.patch, val_gen)
    val_noisy = random_corruption(val_clean, settings.corruptions, val_gen)

    seed_everything(settings.seed)  # the initial weights: a resumed run's first part is the same run
    model = DenoisingAutoencoder(settings.width, settings.levels).to(device)
    total = settings.epochs * settings.steps_per_epoch
    stepper = Stepper(torch.optim.Adam(model.parameters(), lr=settings.lr), total, device, precision)

    def train_epoch(epoch: int, gen: torch.Generator) -> float:
        total_loss = 0.0
        for step in range(1, settings.steps_per_epoch + 1):
            clean = train_set.patches(settings.batch_size, settings.patch, gen)
            noisy = random_corruption(clean, settings.corruptions, gen)
            with autocast(device, precision):
                output = model(noisy.to(device, non_blocking=True))
            loss = F.mse_loss(output.float(), clean.to(device))
            stepper.step(loss)
            total_loss += float(loss.detach())
            if progress:
                progress("training", (epoch - 1) * settings.steps_per_epoch + step, total)
        return total_loss / settings.steps_per_epoch

    @torch.no_grad()
    def validate() -> float:
        outs = []
        for start in range(0, len(val_noisy), settings.batch_size):
            with autocast(device, precision):
                outs.append(model(val_noisy[start:start + settings.batch_size].to(device)).float().clamp(0, 1).cpu())
        return psnr(torch.cat(outs), val_clean)

    corrupted_psnr = psnr(val_noisy, val_clean)
    log.info("validation PSNR of the corrupted patches themselves: %.2f dB", corrupted_psnr)
    describe = {
        "kind": "autoencoder",
        "model": {"width": settings.width, "levels": settings.levels},
        "extractor": {"backbone": "denoising-autoencoder", "pooling": "gem", "pooling_params": {"p": 3.0},
                      "image_size": settings.image_size, "resize": settings.resize, "interpolation": "bicubic"},
        "data": {"images": len(paths), "train": len(train_set.pixels), "validation": len(val_set.pixels),
                 "corrupted_psnr": round(corrupted_psnr, 3)},
    }
    return fit(net=model, stepper=stepper, out=Path(out),
               settings={**asdict(settings), "data": {"images": len(paths)}}, describe=describe,
               train_epoch=train_epoch, validate=validate, resume=resume, keep_resume=keep_resume,
               on_epoch=on_epoch)


def psnr(output: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images on the 0-to-1 scale, over the whole set."""
    mse = float(F.mse_loss(output.float(), target.float()))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@dataclass
class _Canvases:
    """Letterboxed uint8 canvases of a set of images and their valid sizes."""

    pixels: torch.Tensor  # (N, S, S, 3) uint8
    heights: torch.Tensor
    widths: torch.Tensor

    @classmethod
    def load(cls, paths: list[str], pre: Preprocessor, workers: int, progress: Progress | None,
             phase: str) -> _Canvases:
        """The canvases of the images that decode; the others are logged and left out."""
        loop = EmbedLoop(paths, pre, lambda batch: batch.pixels, batch_size=32, workers=workers,
                         progress=progress, phase=phase)
        kept = [(pixels, batch.heights, batch.widths) for batch, pixels in loop if pixels is not None]
        for i, why in loop.failures:
            log.warning("skipping %s: %s", paths[i], why)
        if not kept:
            raise RetrievalError(f"no image could be decoded ({phase})")
        return cls(*(torch.cat(part) for part in zip(*kept)))

    def patches(self, n: int, side: int, gen: torch.Generator) -> torch.Tensor:
        """(n, 3, side, side) floats in [0, 1]: random crops, mostly inside the real image."""
        which = torch.randint(len(self.pixels), (n,), generator=gen)
        out = torch.empty(n, 3, side, side)
        size = self.pixels.shape[1]
        for j, i in enumerate(which.tolist()):
            top = int(torch.randint(max(1, min(int(self.heights[i]), size) - side + 1), (), generator=gen))
            left = int(torch.randint(max(1, min(int(self.widths[i]), size) - side + 1), (), generator=gen))
            crop = self.pixels[i, top:top + side, left:left + side]
            out[j] = crop.permute(2, 0, 1).float() / 255.0
        return out
