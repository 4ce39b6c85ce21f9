"""Shared, costly fixtures of the local-feature tests: textured posters and their
features (extracted once per session), and a vocabulary trained on them.

OpenCV is the optional ``local`` extra: without it these tests are not collected.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from retrieval.local import LocalFeatures, RootSift, Vocabulary

POSTERS = 30

try:
    importlib.import_module("cv2")
except ImportError:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def extractor() -> RootSift:
    return RootSift()


@pytest.fixture(scope="session")
def posters() -> list[np.ndarray]:
    """Thirty different textured posters (480 x 360)."""
    from .scenes import poster

    return [poster(seed) for seed in range(POSTERS)]


@pytest.fixture(scope="session")
def poster_features(posters: list[np.ndarray], extractor: RootSift) -> list[LocalFeatures]:
    return [extractor.extract(p) for p in posters]


@pytest.fixture(scope="session")
def snapshot(posters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
    """A photo of poster 7 (warped, relit, on clutter): (image, homography, poster index)."""
    from .scenes import homography, photo

    source = posters[7]
    model = homography(source.shape[1], source.shape[0], seed=7, scale=1.1)
    return photo(source, model, (720, 560), seed=7), model, 7


@pytest.fixture(scope="session")
def vocabulary(poster_features: list[LocalFeatures]) -> Vocabulary:
    return Vocabulary.train(np.concatenate([f.descriptors for f in poster_features]), 1024, seed=0)
