"""The P x K batches triplet mining needs (labelled sets themselves live in
:mod:`retrieval.evaluation.labels`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from ..errors import RetrievalError
from .loop import epoch_seed

__all__ = ["PKSampler"]

log = logging.getLogger(__name__)


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of P classes x K images each, so every anchor has positives and negatives.

    Each epoch visits every image about once: classes are drawn in proportion to their
    size, and a class with fewer than K images repeats some. Batches depend only on
    the seed and the epoch (see :meth:`set_epoch`), which makes a resumed run identical.
    """

    def __init__(self, labels: Sequence[str], classes_per_batch: int, per_class: int, seed: int = 0) -> None:
        by_class: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by_class.setdefault(label, []).append(i)
        self.groups = [idx for idx in by_class.values() if len(idx) >= 2]  # a lone image has no positive
        if len(self.groups) < 2:
            raise RetrievalError("P x K batches need at least 2 classes with 2+ images each")
        if classes_per_batch > len(self.groups):  # said, not silent: the batches are smaller than asked
            log.warning("%d classes per batch asked, but the training split has only %d classes of 2+ images: "
                        "each batch holds %d", classes_per_batch, len(self.groups), len(self.groups))
        self.p = min(classes_per_batch, len(self.groups))
        self.k = per_class
        self.seed = seed
        self.epoch = 0
        self.batches = max(1, sum(len(g) for g in self.groups) // (self.p * self.k))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        sizes = torch.tensor([len(g) for g in self.groups], dtype=torch.float)
        for _ in range(self.batches):
            chosen = torch.multinomial(sizes, self.p, replacement=False, generator=gen).tolist()
            batch: list[int] = []
            for c in chosen:
                group = self.groups[c]
                if len(group) >= self.k:
                    picks = torch.randperm(len(group), generator=gen)[: self.k]
                else:
                    picks = torch.randint(len(group), (self.k,), generator=gen)
                batch += [group[j] for j in picks.tolist()]
            yield batch
