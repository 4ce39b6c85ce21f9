"""What runs on the Ray workers: the decode task and the embed actor.

Both reuse the local indexer's parts, so a file decodes, fails and embeds on the cluster as
it does here: :class:`~retrieval.images.batches.DecodeDataset` (one read per file, hashed
and decoded from the same bytes, EXIF read from them too) and the extractor the index's
manifest describes, run by the same runtime choice.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..catalog import STATUS_OK
from ..extractors import Manifest
from ..images.batches import DecodeDataset
from ..images.preprocess import Preprocessor
from .shards import record_of, shard_table

__all__ = ["Embedder", "decode_files"]


def decode_files(batch: dict[str, np.ndarray], preprocess: Preprocessor) -> dict[str, np.ndarray]:
    """A Ray Data batch of paths -> canvases, their valid sizes and each file's shard row
    (as JSON: a row of None-able facts crosses Ray's blocks without type guessing).

    A file that failed gets a blank canvas, which the embed actor leaves out.
    """
    paths = [str(p) for p in batch["path"]]
    dataset = DecodeDataset(paths, preprocess, exif=True)
    decoded = [dataset[i] for i in range(len(paths))]
    blank = np.zeros((preprocess.image_size, preprocess.image_size, 3), np.uint8)
    return {
        "pixels": np.stack([d.pixels if d.pixels is not None else blank for d in decoded]),
        "valid_h": np.array([d.valid_h for d in decoded], np.int64),
        "valid_w": np.array([d.valid_w for d in decoded], np.int64),
        "record": np.array([json.dumps(record_of(p, d)) for p, d in zip(paths, decoded)]),
    }


class Embedder:
    """Ray Data's callable class for the embed step: one extractor per actor, built once.

    Args:
        manifest: the index's extractor; the one built here must match it (same weights).
        device, precision, runtime: as the engine's options choose them locally.
    """

    def __init__(self, manifest: Manifest, device: str, precision: str, runtime: str) -> None:
        from ..runtimes import create_runtime_extractor

        built = create_runtime_extractor(manifest.config, device, precision, runtime, manifest)
        manifest.check_compatible(built.manifest, "extractor on this Ray worker")
        self.extractor = built

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        """Decoded canvases -> shard rows with vectors (failed files pass through)."""
        records = [json.loads(r) for r in batch["record"]]
        ok = np.array([r["status"] == STATUS_OK for r in records], bool)
        vectors = self.extractor.embed_adaptive(torch.from_numpy(np.asarray(batch["pixels"])[ok]),
                                                torch.from_numpy(np.asarray(batch["valid_h"])[ok]),
                                                torch.from_numpy(np.asarray(batch["valid_w"])[ok])) \
            if ok.any() else np.empty((0, self.extractor.dim), np.float32)
        return shard_table(records, vectors)
