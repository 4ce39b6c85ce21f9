"""What both trainers share: the seed rule, the optimisation step, and the epoch loop
(validate, keep the best, save, resume).

Epoch 0 is the untrained model's validation score, saved as the first "best", so a
checkpoint always exists and a run that does not improve says so. After every epoch
the latest state is saved for ``--resume``; the best one is written only when the
validation score beats it. A run that finishes removes that state (the last weights and
the optimiser's, several times the model's size) unless asked to keep it for more epochs. Randomness is reseeded from (seed, epoch) at the start of
each epoch (:func:`seed_everything`), so a resumed run continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import RetrievalError
from ..extractors.checkpoint import (
    LAST_FILE, MODEL_FILE, RESUME_FILE, has_resume, load_resume, save_model, save_resume, write_config,
)

__all__ = ["EpochRecord", "TrainResult", "Stepper", "fit", "cosine_decay", "epoch_seed", "seed_everything",
           "OnEpoch", "FREE_SETTINGS"]

log = logging.getLogger(__name__)


# Settings a resumed run may change: they do not alter what is learned.
FREE_SETTINGS = frozenset({"epochs", "workers", "device", "precision"})


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's outcome; epoch 0 is the model before training."""

    epoch: int
    loss: float  # mean training loss (NaN for epoch 0)
    score: float  # validation score, higher is better (mAP, or PSNR in dB)
    seconds: float


OnEpoch = Callable[[EpochRecord], None]


@dataclass
class TrainResult:
    """What a training run produced."""

    out: Path
    epochs: int
    best_epoch: int
    best_score: float
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0  # wall time of all runs on this checkpoint, resumed ones included

    @property
    def initial_score(self) -> float:
        return self.history[0].score

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "epochs": self.epochs, "best_epoch": self.best_epoch,
                "best_score": _finite(self.best_score), "initial_score": _finite(self.initial_score),
                "seconds": round(self.seconds, 2),
                "history": [{**asdict(r), "loss": _finite(r.loss)} for r in self.history]}


def _finite(x: float) -> float | None:
    """JSON has no NaN: the loss of epoch 0 is written as null."""
    return None if math.isnan(x) else round(x, 6)


def cosine_decay(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Every learning rate follows a cosine from its start to 5% of it over `total` steps."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.05 + 0.475 * (1 + math.cos(math.pi * min(step, total) / total)))


def epoch_seed(seed: int, epoch: int) -> int:
    """The one seed rule: every random stream of `epoch` (0: the run's start, before
    training) derives from this value, which depends on nothing but the settings."""
    return seed * 1_000_003 + epoch


def seed_everything(seed: int, epoch: int = 0) -> torch.Generator:
    """Seed torch, numpy and Python's `random` for `epoch` of a run, and return a fresh
    generator with the same seed for the epoch's own draws (batches, views, patches).

    Seeding torch's global generator also fixes the loaders: a DataLoader draws the base
    seed of its workers (whose augmentations use torch's generator) from it.
    """
    value = epoch_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    return torch.Generator().manual_seed(value)


class Stepper:
    """The optimisation step both trainers take.

    A step zeroes the gradients, back-propagates (through a gradient scaler in fp16, where
    small gradients would underflow), steps the optimiser and advances the cosine schedule
    (:func:`cosine_decay` over `total_steps`). A loss without a gradient (no triplet mined
    in a batch) only advances the schedule, so every run takes the same schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, device: torch.device,
                 precision: str) -> None:
        self.optimizer = optimizer
        self.scheduler = cosine_decay(optimizer, total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(self, loss: torch.Tensor) -> None:
        """One step on `loss`, computed (under the trainer's autocast) since the last step."""
        self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()


def fit(*, net: nn.Module, stepper: Stepper, out: str | Path, settings: dict[str, Any], describe: dict[str, Any],
        train_epoch: Callable[[int, torch.Generator], float], validate: Callable[[], float],
        resume: bool = False, keep_resume: bool = False, on_epoch: OnEpoch | None = None) -> TrainResult:
    """Train `net` for ``settings["epochs"]`` epochs, keeping the best by `validate`.

    Args:
        stepper: the optimiser and schedule, whose state is saved for a resume.
        settings: the trainer's resolved settings (JSON-serialisable); a resumed run must
            match them except for FREE_SETTINGS.
        describe: the checkpoint config's kind, model and extractor sections.
        train_epoch: runs epoch `n` (1-based) with the epoch's generator (after
            :func:`seed_everything`), stepping `stepper`; returns the mean loss.
        validate: the validation score of `net` as it is now (higher is better).
        keep_resume: keep the state a resume needs once the last epoch is done, so that a
            later run can add epochs; by default only the best weights and config remain.

    Raises:
        RetrievalError: `out` already holds a checkpoint and `resume` is False, or the
            settings differ from the run being resumed.
    """
    out = Path(out)
    epochs = int(settings["epochs"])
    seed = int(settings.get("seed", 0))
    optimizer, scheduler = stepper.optimizer, stepper.scheduler
    if resume:
        result, state = _resume(out, net, optimizer, scheduler, settings)
        net.load_state_dict(state)
    else:
        if (out / MODEL_FILE).exists() or has_resume(out):
            raise RetrievalError(f"{out} already holds a checkpoint: pass --resume to continue it, "
                                 "or choose another --out")
        start = time.perf_counter()
        score = validate()
        result = TrainResult(out, 0, 0, score, [EpochRecord(0, math.nan, score, time.perf_counter() - start)])
        result.seconds = result.history[0].seconds
        _save_best(net, describe, settings, result)
        if on_epoch:
            on_epoch(result.history[0])
    for epoch in range(result.epochs + 1, epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(epoch, seed_everything(seed, epoch))
        score = validate()
        record = EpochRecord(epoch, loss, score, time.perf_counter() - start)
        result.history.append(record)
        result.epochs = epoch
        result.seconds += record.seconds
        if score > result.best_score:
            result.best_epoch, result.best_score = epoch, score
            _save_best(net, describe, settings, result)
        save_resume(out, net.state_dict(), {
            "settings": json.dumps(settings), "result": json.dumps(result.to_dict()),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        })
        log.info("epoch %d: loss %.4f, validation %.4f, %.1f s", epoch, loss, score, record.seconds)
        if on_epoch:
            on_epoch(record)
    write_config(out, _config(describe, settings, result))  # the whole history, beside the best weights
    if not keep_resume:
        for name in (LAST_FILE, RESUME_FILE):
            (out / name).unlink(missing_ok=True)
    return result


def _config(describe: dict[str, Any], settings: dict[str, Any], result: TrainResult) -> dict[str, Any]:
    return {**describe, "training": {**result.to_dict(), "settings": settings}}


def _save_best(net: nn.Module, describe: dict[str, Any], settings: dict[str, Any], result: TrainResult) -> None:
    save_model(result.out, net.state_dict(), _config(describe, settings, result))


def _resume(out: Path, net: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler,
            settings: dict[str, Any]) -> tuple[TrainResult, dict[str, torch.Tensor]]:
    state, saved = load_resume(out)
    before = json.loads(saved["settings"])
    changed = [f"{k}: was {before.get(k)!r}, now {settings.get(k)!r}" for k in sorted(set(before) | set(settings))
               if k not in FREE_SETTINGS and before.get(k) != settings.get(k)]
    if changed:
        raise RetrievalError(f"cannot resume {out} with other settings ({'; '.join(changed[:3])}); "
                             "use the first run's settings (only --epochs may grow)")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    done = json.loads(saved["result"])
    history = [EpochRecord(r["epoch"], math.nan if r["loss"] is None else r["loss"], r["score"], r["seconds"])
               for r in done["history"]]
    result = TrainResult(out, done["epochs"], done["best_epoch"], done["best_score"], history, done["seconds"])
    log.info("resuming %s after epoch %d (best %.4f at epoch %d)", out, result.epochs, result.best_score,
             result.best_epoch)
    return result, state
