"""The loader's dataset and collate function (retrieval/images/batches.py): a bad file
becomes an error item with its reason, never an exception that stops the batch."""

from __future__ import annotations

from pathlib import Path

from retrieval.images.batches import DecodeDataset, collate_decoded
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
