"""The loader's dataset and collate function (retrieval/images/batches.py): a bad file
becomes an error item with its reason, never an exception that stops the batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from retrieval.images.batches import DecodeDataset, collate_decoded, default_workers
from retrieval.images.preprocess import Preprocessor

from .. import badimages as bi


def test_decode_dataset_turns_bad_files_into_errors(bad_dir: Path) -> None:
    good = str(bi.sample_photos(1)[0])
    kinds = sorted(bi.UNDECODABLE)
    paths = [good] + [str(bi.undecodable(bad_dir, k)) for k in kinds]
    dataset = DecodeDataset(paths, Preprocessor(224))
    items = [dataset[i] for i in range(len(dataset))]  # never raises
    assert items[0].error is None and items[0].pixels.shape == (224, 224, 3)
    for kind, item in zip(kinds, items[1:]):
        assert item.pixels is None and bi.UNDECODABLE[kind][2] in item.error, (kind, item.error)
    batch = collate_decoded(items)
    assert batch.indices == [0] and tuple(batch.pixels.shape) == (1, 224, 224, 3)
    assert [d.index for d in batch.failures] == list(range(1, len(paths)))


@pytest.mark.parametrize(("cores", "device", "expected"), [
    (2, "cpu", 2), (16, "cpu", 4), (16, "cuda", 14), (64, "cuda", 16), (2, "cuda", 1), (1, "cuda", 1),
])
def test_default_workers_feed_a_gpu_with_every_spare_core(monkeypatch: pytest.MonkeyPatch, cores: int, device: str,
                                                          expected: int) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_workers(None, torch.device(device)) == expected
    assert default_workers(3, torch.device(device)) == 3  # asked for: as asked
