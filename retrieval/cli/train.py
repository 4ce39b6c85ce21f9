"""``retrieve train``: fine-tune extractors (triplet) and train denoisers (autoencoder).

An option left out is not passed on: the trainer's settings class owns every default.
Those classes import torch, which --help must not, so the help shows their values as
text; tests/cli/test_train.py checks that text against the classes.
"""

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from .common import (
    GROUP_SETTINGS, RUN_DEFAULTS, Device, JsonOut, Precision, Quiet, Weights, Workers, json_or_line, note,
    progress_bar,
)

if TYPE_CHECKING:
    from ..training.loop import EpochRecord, TrainResult

app = typer.Typer(help="Train extractors: triplet fine-tuning, denoising autoencoders. "
                       "Options left out take the trainer's defaults.", **GROUP_SETTINGS)

Out = Annotated[Path, typer.Option(
    "--out", "-o", metavar="DIR", help="Checkpoint folder to write: afterwards an --extractor path.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out.")]
KeepResume = Annotated[bool, typer.Option(
    "--keep-resume", help="When done, keep last.safetensors and resume.pt, to add epochs later with --resume "
                          "(by default a finished checkpoint is only its best weights and config).")]
Seed = Annotated[Optional[int], typer.Option(
    metavar="N", show_default="0", help="Random seed: the same seed, the same run.")]


def _given(**settings: Any) -> dict[str, Any]:
    """The settings given on the command line (None: left to the trainer's default)."""
    return {name: value for name, value in settings.items() if value is not None}


@app.command("triplet")
def triplet(
    data: Annotated[Path, typer.Argument(metavar="DATA", hidden=True)],
    out_dir: Out,
    epochs: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="10", help="Training epochs.")] = None,
    frozen_stages: Annotated[Optional[int], typer.Option(
        min=0, metavar="N", show_default="7", help="Leading trunk stages kept frozen (Lite0 has 9).")] = None,
    dim: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="512", help="Output dimension of the projection head.")] = None,
    margin: Annotated[Optional[float], typer.Option(metavar="X", show_default="0.1", help="Triplet margin.")] = None,
    mining: Annotated[Optional[str], typer.Option(
        metavar="NAME", show_default="semihard", help="Triplets mined in each batch (a wrong name lists them).")]
    = None,
    classes_per_batch: Annotated[Optional[int], typer.Option(
        "--classes-per-batch", min=2, metavar="N", show_default="16",
        help="Classes in each training batch (P of a P x K batch).")] = None,
    per_class: Annotated[Optional[int], typer.Option(
        "--images-per-class", min=2, metavar="N", show_default="4",
        help="Images of each class in a training batch (K of a P x K batch).")] = None,
    lr: Annotated[Optional[float], typer.Option(metavar="X", show_default="0.0001", help="Trunk learning rate.")]
    = None,
    head_lr: Annotated[Optional[float], typer.Option(metavar="X", show_default="0.001", help="Head learning rate.")]
    = None,
    image_size: Annotated[Optional[int], typer.Option(
        min=1, metavar="PIXELS", show_default="224", help="Training canvas side.")] = None,
    embed_size: Annotated[Optional[int], typer.Option(
        min=1, metavar="PIXELS", show_default="288", help="Canvas side the written extractor embeds at.")] = None,
    cache_views: Annotated[Optional[int], typer.Option(
        min=0, metavar="N", show_default="4", help="Fixed augmented views per image, the frozen part's output "
                                                   "cached (fast on a CPU); 0: fresh views every epoch.")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(
        metavar="X", show_default="0.1", help="Share of each class held out for validation mAP.")] = None,
    backbone: Annotated[Optional[str], typer.Option(
        metavar="NAME", show_default="tf_efficientnet_lite0", help="Trunk to fine-tune (a wrong name lists them).")]
    = None,
    weights: Weights = None,
    seed: Seed = None,
    resume: Resume = False,
    keep_resume: KeepResume = False,
    device: Device = RUN_DEFAULTS.device,
    precision: Precision = RUN_DEFAULTS.precision,
    workers: Workers = RUN_DEFAULTS.workers,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Fine-tune a trunk and projection head with triplet loss.

    DATA is a folder with one subfolder per class, or a CSV of path,label lines.
    """
    from ..training.triplet import TripletSettings, train_triplet

    settings = TripletSettings(**_given(
        epochs=epochs, backbone=backbone, backbone_weights=str(weights) if weights else None,
        frozen_stages=frozen_stages, dim=dim, margin=margin, mining=mining, classes_per_batch=classes_per_batch,
        per_class=per_class, lr=lr, head_lr=head_lr, image_size=image_size, embed_size=embed_size,
        cache_views=cache_views, val_fraction=val_fraction, seed=seed, workers=workers, device=device,
        precision=precision))
    _run(lambda **kw: train_triplet(data, out_dir, settings, resume=resume, keep_resume=keep_resume, **kw),
         "validation mAP", json_out, quiet)


@app.command("autoencoder")
def autoencoder(
    data: Annotated[Path, typer.Argument(metavar="DATA", hidden=True)],
    out_dir: Out,
    epochs: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="8", help="Training epochs.")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="150", help="Training steps per epoch.")] = None,
    noise_sigma: Annotated[Optional[float], typer.Option(
        metavar="X", show_default="0.2", help="Strongest Gaussian noise (sigma, 0-1 scale); 0: off.")] = None,
    salt_pepper: Annotated[Optional[float], typer.Option(
        metavar="X", show_default="0.05", help="Most salt-and-pepper (fraction of pixels); 0: off.")] = None,
    jpeg_quality: Annotated[Optional[int], typer.Option(
        metavar="Q", show_default="15", help="Lowest JPEG quality; 100: off.")] = None,
    blur_sigma: Annotated[Optional[float], typer.Option(
        metavar="X", show_default="1.5", help="Strongest Gaussian blur (sigma in pixels); 0: off.")] = None,
    width: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="16", help="Channels of the first level (doubling per level).")] = None,
    levels: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="3", help="Stride-2 levels down to the code.")] = None,
    patch: Annotated[Optional[int], typer.Option(
        min=1, metavar="PIXELS", show_default="96", help="Training patch side.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="32", help="Patches per training step.")] = None,
    lr: Annotated[Optional[float], typer.Option(metavar="X", show_default="0.002", help="Learning rate.")] = None,
    image_size: Annotated[Optional[int], typer.Option(
        min=1, metavar="PIXELS", show_default="288",
        help="Canvas side images are letterboxed to (as the extractor's).")] = None,
    max_images: Annotated[Optional[int], typer.Option(
        min=1, metavar="N", show_default="2000", help="Training images kept in memory.")] = None,
    seed: Seed = None,
    resume: Resume = False,
    keep_resume: KeepResume = False,
    device: Device = RUN_DEFAULTS.device,
    precision: Precision = RUN_DEFAULTS.precision,
    workers: Workers = RUN_DEFAULTS.workers,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Train a denoising autoencoder.

    Use it with --denoise, or as an --extractor (its code is the embedding). DATA is a
    folder of images (searched recursively) or a file listing image paths.
    """
    from ..training.autoencoder import AutoencoderSettings, train_autoencoder
    from ..training.corruptions import CorruptionSettings

    corruptions = CorruptionSettings(**_given(
        noise_sigma=noise_sigma, salt_pepper=salt_pepper, jpeg_quality=jpeg_quality, blur_sigma=blur_sigma))
    settings = AutoencoderSettings(corruptions=corruptions, **_given(
        epochs=epochs, steps_per_epoch=steps_per_epoch, width=width, levels=levels, patch=patch,
        batch_size=batch_size, lr=lr, image_size=image_size, max_images=max_images, seed=seed, workers=workers,
        device=device, precision=precision))
    _run(lambda **kw: train_autoencoder(data, out_dir, settings, resume=resume, keep_resume=keep_resume, **kw),
         "validation PSNR", json_out, quiet)


def _run(train: "Callable[..., TrainResult]", score: str, json_out: bool, quiet: bool) -> None:
    """Run a trainer with a progress bar and a line per epoch, then print its result."""
    with progress_bar(not quiet) as progress:
        result = train(progress=progress, on_epoch=_epoch_line(score)).to_dict()
    json_or_line(result, json_out,
                 f"best {score} {result['best_score']:.4f} at epoch {result['best_epoch']} "
                 f"(before training {result['initial_score']:.4f}), {result['epochs']} epochs in "
                 f"{result['seconds']:.0f} s; checkpoint {result['out']}")


def _epoch_line(score: str) -> "Callable[[EpochRecord], None]":
    """A line on stderr after each epoch (above the progress bar)."""

    def show(record: "EpochRecord") -> None:
        loss = "" if record.epoch == 0 else f"loss {record.loss:.4f}, "
        note(f"epoch {record.epoch}: {loss}{score} {record.score:.4f} ({record.seconds:.1f} s)")

    return show
