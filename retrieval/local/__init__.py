"""Local features for instance search: find the same object, not just the same kind.

Two stages (issue 17). The first puts the right image in a short list: the global CNN
ranking fused (:func:`reciprocal_rank_fusion`) with a bag-of-visual-words ranking
(:class:`RootSift` features -> :class:`Vocabulary` words -> :class:`InvertedFile`, the two
kept together over a collection by :class:`LocalIndex`). The second verifies the short
list geometrically (:class:`SpatialVerifier`) and moves the verified images ahead
(:func:`rerank`).

A leaf like ``retrieval.ann``: it imports numpy and, on first use only, OpenCV (an
optional extra: without it, extraction raises :class:`LocalFeaturesUnavailableError`
saying how to install it) and FAISS, so ``import retrieval`` stays light.
"""

from __future__ import annotations

from ..registry import Registry, declared
from .features import LocalFeatures
from .fusion import reciprocal_rank_fusion, rerank
from .index import LocalIndex, LocalIndexOptions
from .inverted import InvertedFile
from .opencv import LocalFeaturesUnavailableError
from .rootsift import RootSift
from .verify import SpatialVerifier, Verification
from .vocabulary import Vocabulary, sample_descriptors, vocabulary_size

__all__ = ["EXTRACTORS", "InvertedFile", "LocalFeatures", "LocalFeaturesUnavailableError", "LocalIndex",
           "LocalIndexOptions", "RootSift", "SpatialVerifier", "Verification", "Vocabulary", "reciprocal_rank_fusion",
           "rerank", "sample_descriptors", "vocabulary_size"]

# Local-feature extractors by the name an index records (``retrieve index --local sift``).
EXTRACTORS: Registry[RootSift] = Registry("local feature")
EXTRACTORS.add("sift", RootSift, params=declared(RootSift, RootSift.PARAMS), help="RootSIFT (OpenCV SIFT, L1 + square root)")
