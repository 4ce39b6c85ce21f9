"""Helpers for the tests that build or train models: toy training settings, weights
files and checkpoints written from fixed seeds, and a one-thread guard.

Models train at toy sizes (64-128 px canvases, a few dozen steps) on the 50 bundled
photos or on synthetic images, so each test runs in seconds on two CPU cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from retrieval.training.autoencoder import AutoencoderSettings
from retrieval.training.corruptions import CorruptionSettings

NOISE_ONLY = CorruptionSettings(noise_sigma=0.2, salt_pepper=0.0, jpeg_quality=100, blur_sigma=0.0)
TINY_AE = AutoencoderSettings(epochs=3, steps_per_epoch=25, width=8, levels=2, patch=32, batch_size=8,
                              image_size=64, corruptions=NOISE_ONLY, val_patches=48, lr=1e-2, workers=0,
                              device="cpu")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Toy-sized tensors gain nothing from a second thread, and on a loaded machine the
    threads' synchronisation made the training tests ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def labelled_photos(folder: Path) -> list[Path]:
    """The photos of a sample-like folder (one sub-folder per class), sorted."""
    return sorted(Path(folder).glob("*/*.jpg"))


def sample_ap(vectors: np.ndarray, labels: list[str]) -> float:
    """Leave-one-out mAP by scikit-learn: the independent reference for `retrieve eval`."""
    metrics = pytest.importorskip("sklearn.metrics")
    aps = []
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if j != i]
        truth = np.array([labels[j] == labels[i] for j in others])
        if truth.any():
            aps.append(metrics.average_precision_score(truth, vectors[others].astype(np.float64) @ vectors[i]))
    return float(np.mean(aps))


def triplet_checkpoint(folder: Path, seed: int, image_size: int = 96) -> Path:
    """An untrained triplet checkpoint with a random head: enough to test the plumbing."""
    from retrieval.extractors.checkpoint import save_model
    from retrieval.extractors.triplet import build_triplet_net

    model = {"backbone": "tf_efficientnet_lite0", "backbone_weights": None, "pooling": "gem", "gem_p": 3.0,
             "dim": 64, "frozen_stages": 7}
    net, _ = build_triplet_net(model, image_size)
    torch.manual_seed(seed)
    torch.nn.init.normal_(net.head.weight, std=0.05)
    save_model(folder, net.state_dict(), {
        "kind": "triplet", "model": model,
        "extractor": {"backbone": "tf_efficientnet_lite0", "pooling": "gem", "gem_p": 3.0,
                      "image_size": image_size, "resize": "letterbox"}})
    return folder


def random_resnet18_file(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """Random resnet18 weights saved at `path` (.safetensors or a torch file); returns them."""
    import torchvision

    torch.manual_seed(seed)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return state
