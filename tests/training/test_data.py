"""The P x K batch sampler of triplet training (retrieval/training/data.py)."""

from __future__ import annotations

import logging

import pytest

from retrieval.training.data import PKSampler

pytestmark = pytest.mark.usefixtures("one_thread")  # toy models: see modelhelpers.single_thread


def test_pk_sampler_batches_p_classes_of_k_images() -> None:
    labels = [f"c{i % 6}" for i in range(60)] + ["lonely"]
    sampler = PKSampler(labels, classes_per_batch=4, per_class=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 60 // 12
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(batch) == 12 and len(set(classes)) == 4
        assert all(classes.count(c) == 3 for c in set(classes)) and "lonely" not in classes
    assert list(sampler) == batches  # same epoch, same batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_pk_sampler_says_when_it_has_fewer_classes_than_asked(caplog: pytest.LogCaptureFixture) -> None:
    labels = [f"c{i % 3}" for i in range(12)]
    with caplog.at_level(logging.WARNING, "retrieval.training"):
        PKSampler(labels, classes_per_batch=3, per_class=2)
        assert caplog.records == []
        batches = list(PKSampler(labels, classes_per_batch=16, per_class=2))
    assert [r.getMessage() for r in caplog.records] == [
        "16 classes per batch asked, but the training split has only 3 classes of 2+ images: each batch holds 3"]
    assert all(len(batch) == 6 for batch in batches)
