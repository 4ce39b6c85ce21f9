"""What both trainers share: the seed rule, the optimisation step, the corruption registry."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from retrieval.errors import RetrievalError, UnknownNameError
from retrieval.training.corruptions import CORRUPTIONS, CorruptionSettings, corrupt
from retrieval.training.data import PKSampler
from retrieval.training.loop import Stepper, epoch_seed, seed_everything


def _draws(gen: torch.Generator) -> tuple[float, float, float, float]:
    return (float(torch.rand(())), float(np.random.rand()), random.random(), float(torch.rand((), generator=gen)))


def test_seed_everything_fixes_every_stream_from_seed_and_epoch() -> None:
    first = _draws(seed_everything(7, 3))
    assert _draws(seed_everything(7, 3)) == first
    assert all(a != b for a, b in zip(_draws(seed_everything(7, 4)), first))
    assert all(a != b for a, b in zip(_draws(seed_everything(8, 3)), first))
    assert epoch_seed(7, 3) == 7 * 1_000_003 + 3


def test_the_pk_sampler_follows_the_same_seed_rule() -> None:
    labels = [f"c{i % 4}" for i in range(40)]
    sampler = PKSampler(labels, classes_per_batch=2, per_class=2, seed=5)
    sampler.set_epoch(2)
    gen = torch.Generator().manual_seed(epoch_seed(5, 2))
    first_classes = torch.multinomial(torch.full((4,), 10.0), 2, replacement=False, generator=gen).tolist()
    assert sorted({labels[i] for i in next(iter(sampler))}) == sorted(f"c{c}" for c in first_classes)


def test_a_step_zeroes_backpropagates_steps_and_advances_the_schedule() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    stepper = Stepper(torch.optim.SGD(model.parameters(), lr=0.1), total_steps=4, device=torch.device("cpu"),
                      precision="fp32")
    x = torch.randn(8, 3)
    before = model.weight.detach().clone()
    expected = before - 0.1 * torch.autograd.grad(model(x).pow(2).mean(), model.weight)[0]
    model.weight.grad = torch.full_like(model.weight, 100.0)  # stale: must be cleared, not added to
    stepper.step(model(x).pow(2).mean())
    assert torch.allclose(model.weight, expected)
    lr = stepper.optimizer.param_groups[0]["lr"]
    assert lr < 0.1  # the cosine schedule moved on

    stepper.step(torch.tensor(0.5))  # no gradient (no triplet mined): only the schedule moves
    assert torch.allclose(model.weight, expected)
    assert stepper.optimizer.param_groups[0]["lr"] < lr


def test_corruptions_are_registered_with_declared_levels() -> None:
    assert CORRUPTIONS.names() == ["gaussian", "salt_pepper", "jpeg", "blur"]
    level = CORRUPTIONS.entry("jpeg").params["level"]
    assert (level.low, level.high) == (1.0, 100.0)
    x = torch.full((1, 3, 8, 8), 0.5)
    with pytest.raises(UnknownNameError, match="unknown corruption 'fog'; choose gaussian, salt_pepper, jpeg, blur"):
        corrupt(x, "fog", 0.1)
    with pytest.raises(RetrievalError, match="level=1.5: expected a number from 0 to 1"):
        corrupt(x, "gaussian", 1.5)
    with pytest.raises(RetrievalError, match="blur_sigma=11"):
        CorruptionSettings(blur_sigma=11)
    assert torch.equal(corrupt(x, "blur", 0.0), x) and corrupt(x, "jpeg", 50.0).shape == x.shape
