"""Fine-tuning a trunk and projection head with a triplet margin loss.

Each step takes a P x K batch (P classes, K images each), embeds it, mines the hard or
semi-hard triplets inside it (pytorch-metric-learning) and pulls anchors towards their
positives, away from their negatives, by at least the margin. Validation is mAP on a
held-out part of every class, after each epoch; the best epoch is what the checkpoint
keeps.

The frozen prefix of the trunk never changes, so it runs once per image and view when
``cache_views`` is set: the images are decoded and augmented into that many fixed
views (the first one plain), their prefix outputs kept in memory, and epochs only run
the trainable rest. That is what makes training practical on a CPU. With
``cache_views=0`` every epoch draws fresh augmentations and runs the whole network
(the setting for a GPU).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import RetrievalError, UnknownNameError
from ..evaluation.labels import LabelledImages, read_labelled
from ..evaluation.metrics import evaluate
from ..extractors.backbones import DEFAULT_BACKBONE
from ..extractors.pooling import POOLINGS
from ..extractors.triplet import TripletNet, build_triplet_net
from ..images.batches import DecodedBatch, default_workers
from ..images.embedding import EmbedLoop
from ..images.preprocess import CanvasMaker, Preprocessor
from ..options import Progress, autocast, resolve_device, resolve_precision
from .augment import Augment
from .data import PKSampler
from .loop import OnEpoch, Stepper, TrainResult, fit, seed_everything

__all__ = ["MINING", "TripletSettings", "train_triplet"]

log = logging.getLogger(__name__)

MINING = ("semihard", "hard", "all")
# Below this many held-out images a validation mAP is too coarse to choose an epoch by: with
# 6 (the case that prompted the warning) it read 1.0 before training and never moved.
MIN_VALIDATION = 20

Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]  # inputs of the trainable part, heights, widths, indices


@dataclass(frozen=True)
class TripletSettings:
    """Everything a triplet run depends on; stored in the checkpoint and checked on resume."""

    epochs: int = 10
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str | None = None  # local weights file for the backbone; None: packaged/published
    frozen_stages: int = 7  # leading trunk stages kept as pretrained (Lite0 has 9: the last two train)
    dim: int = 512  # output dimension of the projection head
    margin: float = 0.1  # triplet margin, on L2 distances between unit vectors
    mining: str = "semihard"  # which triplets of a batch count: semihard, hard, all
    classes_per_batch: int = 16  # P
    per_class: int = 4  # K
    lr: float = 1e-4  # trunk learning rate (AdamW, cosine decay)
    head_lr: float = 1e-3  # head and GeM exponent learning rate
    weight_decay: float = 1e-4
    image_size: int = 224  # training canvas side
    embed_size: int = 288  # canvas side of the extractor that training writes
    resize: str = "letterbox"
    pooling: str = "gem"
    pooling_params: dict[str, float] = field(default_factory=dict)  # checked, defaults filled: GeM p=3
    cache_views: int = 4  # fixed augmented views per image with the prefix cached; 0: fresh views each epoch
    val_fraction: float = 0.1  # held out of every class for validation mAP
    seed: int = 0
    batch_size: int = 32  # for caching and validation passes
    workers: int | None = None  # decode processes; None: up to 4
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 (or fp16) autocast on a GPU, fp32 on the CPU

    def __post_init__(self) -> None:
        if self.mining not in MINING:
            raise UnknownNameError(f"unknown mining {self.mining!r}; choose {', '.join(MINING)}")
        if min(self.epochs, self.classes_per_batch - 1, self.per_class - 1, self.batch_size) < 1 \
                or self.cache_views < 0 or self.frozen_stages < 0:
            raise RetrievalError("epochs, batch size must be 1+, P and K 2+, cache views and frozen stages 0+")


def train_triplet(data: LabelledImages | str | os.PathLike[str], out: str | os.PathLike[str],
                  settings: TripletSettings = TripletSettings(), *, resume: bool = False,
                  keep_resume: bool = False, progress: Progress | None = None,
                  on_epoch: OnEpoch | None = None) -> TrainResult:
    """Fine-tune on labelled images and write a triplet extractor checkpoint to `out`.

    Args:
        data: a :class:`LabelledImages`, a folder of class folders, or a CSV of path,label.
        resume: continue the run saved in `out` (same settings; epochs may grow).
        keep_resume: when done, keep what a resume needs (see :func:`.loop.fit`).
        progress: called as (phase, done, total) while caching and training.
        on_epoch: called with each epoch's record (epoch 0: before training).

    Raises:
        RetrievalError: unusable data (fewer than two classes of two images, missing files)
            or settings; `out` holds a checkpoint and `resume` is False.
    """
    images = data if isinstance(data, LabelledImages) else read_labelled(data)
    images.require_classes(2, 2)
    train, val = images.split(settings.val_fraction, settings.seed)
    train.require_classes(2, 2)
    if not any(val.labels.count(c) >= 2 for c in val.classes):
        raise RetrievalError("the validation split has no class with 2 images, so no mAP: "
                             "raise the validation fraction or add images")
    if len(val) < MIN_VALIDATION:
        log.warning("the validation split holds only %d images (%d classes): one image changes its mAP by a "
                    "large step, so it can hardly tell epochs apart; raise the validation fraction "
                    "(--val-fraction) or add images", len(val), len(val.classes))
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    workers = default_workers(settings.workers)
    model = {"backbone": settings.backbone, "backbone_weights": settings.backbone_weights,
             "pooling": settings.pooling, "pooling_params": POOLINGS.resolve(settings.pooling, settings.pooling_params),
             "dim": settings.dim,
             "frozen_stages": settings.frozen_stages}
    net, trunk = build_triplet_net(model, settings.image_size)
    net = net.to(device).eval()  # batch-norm statistics stay frozen: training matches inference
    run = _Runner(net, device, precision, settings.batch_size, workers, progress)
    pre = Preprocessor(settings.image_size, settings.resize, trunk.interpolation)

    seed_everything(settings.seed)  # the cached views' augmentations: the same again on resume
    val_x = run.prefixes(val.paths, pre, "validation")
    views = [run.prefixes(train.paths, pre if v == 0 else Augment(pre), f"view {v + 1}/{settings.cache_views}")
             for v in range(settings.cache_views)]
    # Without cached views, files that fail to decode drop out of their batches instead.
    ok = [i for i in range(len(train)) if all(x.valid[i] for x in views)]
    if not resume:
        clean = views[0] if views else run.prefixes(train.paths, pre, "head init")
        net.init_head(run.descriptors(clean, [i for i in range(len(train)) if clean.valid[i]]).cpu())
        del clean

    sampler = PKSampler([train.labels[i] for i in ok], settings.classes_per_batch, settings.per_class, settings.seed)
    class_ids = {c: n for n, c in enumerate(train.classes)}
    trainable = [p for stage in net.stages[net.frozen_stages:] for p in stage.parameters()]
    optimizer = torch.optim.AdamW([
        {"params": trainable, "lr": settings.lr},
        {"params": [*net.head.parameters(), *net.pooling.parameters()], "lr": settings.head_lr},
    ], weight_decay=settings.weight_decay)
    total = settings.epochs * len(sampler)
    stepper = Stepper(optimizer, total, device, precision)
    loss_fn, miner = _loss_and_miner(settings.margin, settings.mining)

    def train_epoch(epoch: int, gen: torch.Generator) -> float:
        sampler.set_epoch(epoch)
        steps = _cached_steps(views, sampler, ok, gen) if views else \
            _fresh_steps(run, train.paths, Augment(pre), _Mapped(sampler, ok))
        total_loss, n = 0.0, 0
        for step, (x, heights, widths, idx) in enumerate(steps, 1):
            y = torch.tensor([class_ids[train.labels[i]] for i in idx], device=device)
            with run.autocast():
                emb = net.suffix(x.to(device, non_blocking=True).float(), heights.to(device), widths.to(device))
            emb = emb.float()
            loss = loss_fn(emb, y, miner(emb, y))
            stepper.step(loss)
            total_loss, n = total_loss + float(loss.detach()), n + 1
            if progress:
                progress("training", (epoch - 1) * len(sampler) + step, total)
        return total_loss / max(n, 1)

    def validate() -> float:
        keep = [i for i in range(len(val)) if val_x.valid[i]]
        vecs = run.embeddings(val_x, keep).numpy()
        labels_ = [val.labels[i] for i in keep]
        return evaluate(vecs, labels_, vecs, labels_, ks=(1,), query_ids=keep, gallery_ids=keep).map

    describe = {
        "kind": "triplet", "model": model,
        "extractor": {"backbone": settings.backbone, "pooling": settings.pooling, "pooling_params": model["pooling_params"],
                      "image_size": settings.embed_size, "resize": settings.resize},
        "data": {"images": len(images), "classes": len(images.classes), "train": len(train), "validation": len(val)},
    }
    return fit(net=net, stepper=stepper, out=Path(out),
               settings={**asdict(settings), "data": _fingerprint(images)}, describe=describe,
               train_epoch=train_epoch, validate=validate, resume=resume, keep_resume=keep_resume,
               on_epoch=on_epoch)


@dataclass
class _Prefixes:
    """Frozen-prefix outputs of a list of images (float16 on the CPU), their valid sizes,
    and which images decoded at all."""

    x: torch.Tensor  # (N, C, h, w)
    heights: torch.Tensor
    widths: torch.Tensor
    valid: list[bool]


class _Runner:
    """Runs the network's parts over image files or cached prefixes, in batches, without gradients."""

    def __init__(self, net: TripletNet, device: torch.device, precision: str, batch_size: int, workers: int,
                 progress: Progress | None) -> None:
        self.net, self.device, self.precision = net, device, precision
        self.batch_size, self.workers, self.progress = batch_size, workers, progress

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.precision)

    def loop(self, paths: Sequence[str], preprocess: CanvasMaker, phase: str, progress: Progress | None = None,
             batch_sampler: torch.utils.data.Sampler[list[int]] | None = None) -> EmbedLoop[torch.Tensor]:
        """The frozen prefix over image files, batch by batch; its outputs stay on the device."""
        return EmbedLoop(paths, preprocess, self._prefix, batch_size=self.batch_size, workers=self.workers,
                         device=self.device, batch_sampler=batch_sampler, progress=progress, phase=phase)

    @torch.no_grad()
    def _prefix(self, batch: DecodedBatch) -> torch.Tensor:
        with self.autocast():
            return self.net.prefix(batch.pixels.to(self.device, non_blocking=True))

    def prefixes(self, paths: tuple[str, ...], preprocess: CanvasMaker, phase: str) -> _Prefixes:
        """The prefix outputs of every image that decodes, kept on the CPU in float16."""
        out: _Prefixes | None = None
        loop = self.loop(paths, preprocess, phase, self.progress)
        for batch, x in loop:
            if x is None:
                continue
            if out is None:
                n = len(paths)
                out = _Prefixes(torch.zeros((n, *x.shape[1:]), dtype=torch.float16),
                                torch.ones(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64), [False] * n)
            idx = torch.tensor(batch.indices)
            out.x[idx], out.heights[idx], out.widths[idx] = x.to("cpu", torch.float16), batch.heights, batch.widths
            for i in batch.indices:
                out.valid[i] = True
        for i, why in loop.failures:
            log.warning("skipping %s: %s", paths[i], why)
        if out is None:
            raise RetrievalError(f"no image could be decoded ({phase})")
        return out

    @torch.no_grad()
    def _apply(self, fn: Callable[..., torch.Tensor], cached: _Prefixes, keep: list[int]) -> torch.Tensor:
        parts = []
        for start in range(0, len(keep), self.batch_size):
            idx = torch.tensor(keep[start:start + self.batch_size])
            with self.autocast():
                parts.append(fn(cached.x[idx].to(self.device).float(), cached.heights[idx].to(self.device),
                                cached.widths[idx].to(self.device)).float().cpu())
        return torch.cat(parts)

    def descriptors(self, cached: _Prefixes, keep: list[int]) -> torch.Tensor:
        """Pre-head descriptors, e.g. to start the head as their PCA."""
        return self._apply(self.net.descriptor, cached, keep)

    def embeddings(self, cached: _Prefixes, keep: list[int]) -> torch.Tensor:
        """Final unit vectors, as the extractor will compute them."""
        return self._apply(self.net.suffix, cached, keep)


def _cached_steps(views: list[_Prefixes], sampler: PKSampler, ok: list[int], gen: torch.Generator) -> Iterator[Step]:
    """P x K batches of cached prefixes, one randomly chosen view of each image."""
    for batch in sampler:
        idx = [ok[j] for j in batch]
        which = torch.randint(len(views), (len(idx),), generator=gen).tolist()
        x = torch.stack([views[v].x[i] for v, i in zip(which, idx)])
        heights = torch.stack([views[v].heights[i] for v, i in zip(which, idx)])
        widths = torch.stack([views[v].widths[i] for v, i in zip(which, idx)])
        yield x, heights, widths, idx


def _fresh_steps(run: _Runner, paths: tuple[str, ...], augment: Augment,
                 batch_sampler: torch.utils.data.Sampler[list[int]]) -> Iterator[Step]:
    """Decode and augment each P x K batch anew and run the frozen prefix on it; a batch
    left with fewer than two images (the rest failed to decode) has no triplet."""
    for batch, x in run.loop(paths, augment, "training", batch_sampler=batch_sampler):
        if x is not None and len(batch.indices) >= 2:
            yield x, batch.heights, batch.widths, batch.indices


class _Mapped(torch.utils.data.Sampler[list[int]]):
    """A batch sampler over a subset, yielding indices into the full list."""

    def __init__(self, inner: PKSampler, ok: list[int]) -> None:
        self.inner, self.ok = inner, ok

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.inner:
            yield [self.ok[j] for j in batch]


def _loss_and_miner(margin: float, mining: str) -> tuple[Callable, Callable]:
    """pytorch-metric-learning's triplet margin loss and a miner of the chosen triplets."""
    from pytorch_metric_learning import losses, miners  # slow to import: only when training

    return losses.TripletMarginLoss(margin=margin), miners.TripletMarginMiner(margin=margin, type_of_triplets=mining)


def _fingerprint(images: LabelledImages) -> dict[str, object]:
    """Identifies the training data, so a resumed run can tell it is given the same."""
    h = hashlib.blake2b(digest_size=8)
    for p, label in zip(images.paths, images.labels):
        h.update(f"{p}\t{label}\n".encode())
    return {"images": len(images), "classes": len(images.classes), "digest": h.hexdigest()}
