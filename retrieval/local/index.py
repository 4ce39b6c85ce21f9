"""The local-feature index of a collection: a visual vocabulary and an inverted file keyed
by catalog ids, built from the stored features and kept in step like the ANN index.

It is a cache of the catalog (see :mod:`retrieval.bundle.local_cache`): :meth:`LocalIndex.build`
streams every image's features twice (once to sample descriptors for the vocabulary, once
to index every image), so a million images never sit in memory at once; :meth:`add` and
:meth:`remove` follow the catalog's change log between rebuilds.

A collection too small to train a vocabulary on (fewer than ``train_min`` descriptors)
gives an *untrained* index: it only counts what it has seen, :meth:`search` returns
nothing (the caller ranks by the global stage alone, which for a collection this small
fits in the short list anyway), and :meth:`needs_rebuild` asks for a rebuild once enough
descriptors have arrived. A trained index asks again once the collection has grown to 4x
the images its vocabulary was trained on, as the IVF index does: a vocabulary sampled
from a quarter of the collection is both too small (:func:`vocabulary_size` grows with
the collection) and blind to what arrived since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ..ann.base import array_of, pack, unpack
from ..errors import BadQueryError, RetrievalError
from ..registry import Param
from .features import LocalFeatures
from .inverted import TF_MODES, InvertedFile
from .settings import check_fields
from .vocabulary import DESCRIPTORS_PER_WORD, MAX_WORDS, Vocabulary, vocabulary_size

__all__ = ["LocalIndexOptions", "LocalIndex", "TRAIN_MIN"]

_FORMAT = 1
_SEED = 0  # sampling and k-means: a rebuild of the same collection gives the same index
_POINTS_PER_WORD = 16  # training sample per word: 1M descriptors (128 MB) for the largest vocabulary
_GROWTH = 4  # images / images trained on, beyond which the vocabulary is retrained
_ASSIGN_BATCH = 1 << 16  # descriptors assigned to words in one FAISS search
_PIECES = 1024  # sampled pieces held before they are joined into one array
# Below this many descriptors (~16 images of 1,000 features; 3,276 words) no vocabulary is
# trained: such a collection fits in the short list, where spatial verification sees every
# image anyway.
TRAIN_MIN = 16_384

Source = Callable[[], Iterable[tuple[int, LocalFeatures]]]


@dataclass(frozen=True)
class LocalIndexOptions:
    """How a :class:`LocalIndex` is built; recorded in its bytes.

    Attributes:
        train_min: descriptors the collection needs before a vocabulary is trained.
        words: vocabulary size; None sizes it by :func:`vocabulary_size` of the
            collection's descriptor count (tests and small experiments fix it).
        tf: term-frequency weighting of the inverted file ("log" or "binary").
    """

    train_min: int = TRAIN_MIN
    words: int | None = None
    tf: str = "log"

    PARAMS: ClassVar[Mapping[str, Param]] = {
        "train_min": Param(int, low=DESCRIPTORS_PER_WORD, high=1 << 40,
                           help="local descriptors needed before a vocabulary is trained"),
        "words": Param(int, low=1, high=MAX_WORDS, optional=True, help="vocabulary size (default: by collection)"),
        "tf": Param(str, choices=TF_MODES, help="term-frequency weighting of the inverted file"),
    }

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> LocalIndexOptions:
        """Options from a settings mapping (e.g. JSON), every name and value checked.

        Raises:
            RetrievalError: an unknown name, or a value of the wrong type or range.
        """
        unknown = sorted(set(values) - set(cls.PARAMS))
        if unknown:
            raise RetrievalError(f"unknown local-index option {unknown[0]!r}; valid: {', '.join(cls.PARAMS)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The options by name (JSON-able)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LocalIndex:
    """Bag-of-visual-words search over a collection's local features (module docstring).

    Satisfies :class:`retrieval.bundle.CachedIndex`. A new index is untrained and empty;
    :meth:`build` makes one from a whole collection.
    """

    def __init__(self, options: LocalIndexOptions | None = None) -> None:
        self.options = options or LocalIndexOptions()
        self.vocabulary: Vocabulary | None = None  # None: untrained
        self.trained_on = 0  # images the trained index held when it was built
        self._inverted: InvertedFile | None = None
        self._pending: dict[int, int] = {}  # untrained: id -> descriptor count
        self._pending_descriptors = 0

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, source: Source, options: LocalIndexOptions | None = None) -> LocalIndex:
        """An index of every image `source()` yields, as (id, features).

        `source` is called twice and must yield the same collection each time: the first
        pass counts descriptors and samples them for the vocabulary (a uniform sample held
        within twice what training uses, whatever the collection's size), the second
        indexes every image. Sampling and training are seeded, so the same collection
        gives the same index.
        """
        index = cls(options)
        sample = _DescriptorSample(index._sample_size)
        for _, features in source():
            sample.add(features.descriptors)
        if sample.seen >= index.options.train_min:
            rows = sample.rows()
            words = min(index._words_for(sample.seen), len(rows))
            index.vocabulary = Vocabulary.train(rows, words, seed=_SEED, points_per_word=_POINTS_PER_WORD)
            index._inverted = InvertedFile(words, index.options.tf)
        index.add(source())
        index.trained_on = index.ntotal if index.trained else 0
        return index

    def _words_for(self, descriptors: int) -> int:
        """Vocabulary size for a collection of `descriptors`."""
        return self.options.words or vocabulary_size(max(descriptors, DESCRIPTORS_PER_WORD))

    def _sample_size(self, descriptors: int) -> int:
        """Descriptors training samples from a collection of `descriptors`."""
        return min(descriptors, self._words_for(descriptors) * _POINTS_PER_WORD)

    # ------------------------------------------------------------------ CachedIndex

    @property
    def trained(self) -> bool:
        """Whether the index has a vocabulary (and so answers searches)."""
        return self.vocabulary is not None

    @property
    def ntotal(self) -> int:
        """Images held, with or without features."""
        return self._inverted.ntotal if self._inverted is not None else len(self._pending)

    def __contains__(self, image_id: object) -> bool:
        return image_id in (self._inverted if self._inverted is not None else self._pending)

    def needs_rebuild(self) -> bool:
        """Untrained with enough descriptors to train, or grown past 4x what was trained on."""
        if self._inverted is None:
            return self._pending_descriptors >= self.options.train_min
        return self.ntotal > _GROWTH * self.trained_on

    def add(self, items: Iterable[tuple[int, LocalFeatures]]) -> None:
        """Index these images (an image without features is held but never found).

        Raises:
            RetrievalError: an id that is negative or present already.
        """
        if self._inverted is None:
            for image_id, features in items:
                if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer)) or image_id < 0:
                    raise RetrievalError(f"image id {image_id!r} must be an integer of at least 0")
                if int(image_id) in self._pending:
                    raise RetrievalError(f"image {image_id} is in the local-feature index already")
                self._pending[int(image_id)] = len(features)
                self._pending_descriptors += len(features)
            return
        assert self.vocabulary is not None
        for batch in _batches(items, _ASSIGN_BATCH):
            words = self.vocabulary.assign(np.concatenate([f.descriptors for _, f in batch]))
            bounds = np.cumsum([len(f) for _, f in batch])[:-1]
            for (image_id, _), image_words in zip(batch, np.split(words, bounds)):
                self._inverted.add(image_id, image_words)

    def remove(self, ids: np.ndarray | list[int]) -> None:
        """Forget these images; unknown ids are ignored."""
        if self._inverted is not None:
            self._inverted.remove(ids)
            return
        for image_id in np.asarray(ids, np.int64).ravel().tolist():
            self._pending_descriptors -= self._pending.pop(image_id, 0)

    def search(self, features: LocalFeatures, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The `k` images whose visual words best match the query's (tf-idf cosine), as
        (id, score) best first; only ids in `allowed` when given. An untrained index
        returns nothing.

        Raises:
            BadQueryError: `k` is not a positive integer.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise BadQueryError(f"k must be a positive integer, not {k!r}")
        if self._inverted is None or len(features) == 0:
            return []
        assert self.vocabulary is not None
        return self._inverted.search(self.vocabulary.assign(features.descriptors), k, allowed)

    # ------------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        """The options, counters, and the vocabulary and inverted file when trained (npz, no pickle)."""
        options = self.options
        arrays: dict[str, np.ndarray] = {"format": np.array([_FORMAT], np.int64),
                  "options": np.array([options.train_min, options.words or 0, TF_MODES.index(options.tf)], np.int64),
                  "trained_on": np.array([self.trained_on], np.int64)}
        if self._inverted is not None and self.vocabulary is not None:
            arrays["vocabulary"] = np.frombuffer(self.vocabulary.to_bytes(), np.uint8)
            arrays["inverted"] = np.frombuffer(self._inverted.to_bytes(), np.uint8)
        else:
            arrays["pending_ids"] = np.fromiter(self._pending, np.int64, len(self._pending))
            arrays["pending_counts"] = np.fromiter(self._pending.values(), np.int64, len(self._pending))
        return pack(arrays)

    @classmethod
    def from_bytes(cls, payload: bytes) -> LocalIndex:
        """The index :meth:`to_bytes` saved.

        Raises:
            ValueError: not such a payload, a newer format, or parts that are damaged or
                do not fit together.
        """
        a = unpack(payload, required=("format", "options", "trained_on"))
        if a["format"].tolist() != [_FORMAT]:
            raise ValueError(f"local-index format {a['format'].tolist()}; this release reads [{_FORMAT}]")
        train_min, words, tf = array_of(a, "options", "i", 3).tolist()
        trained_on = int(array_of(a, "trained_on", "i", 1)[0])
        try:
            options = LocalIndexOptions(train_min, words or None, TF_MODES[tf] if 0 <= tf < len(TF_MODES) else str(tf))
        except RetrievalError as e:
            raise ValueError(f"local-index options: {e}") from None
        index = cls(options)
        if "vocabulary" in a:
            index._load_trained(a, trained_on)
        else:
            index._load_pending(a, trained_on)
        return index

    def _load_trained(self, a: Mapping[str, np.ndarray], trained_on: int) -> None:
        if "inverted" not in a:
            raise ValueError("a vocabulary without its inverted file")
        vocabulary = Vocabulary.from_bytes(array_of(a, "vocabulary", "u").tobytes())
        inverted = InvertedFile.from_bytes(array_of(a, "inverted", "u").tobytes())
        if inverted.words != vocabulary.size or inverted.tf != self.options.tf:
            raise ValueError(f"an inverted file of {inverted.words} words ({inverted.tf} tf) for a vocabulary "
                             f"of {vocabulary.size} ({self.options.tf} tf)")
        if trained_on < 0:
            raise ValueError(f"trained on {trained_on} images")
        self.vocabulary, self._inverted, self.trained_on = vocabulary, inverted, trained_on

    def _load_pending(self, a: Mapping[str, np.ndarray], trained_on: int) -> None:
        if "pending_ids" not in a or "pending_counts" not in a or trained_on != 0:
            raise ValueError("an untrained local index without its counts, or one that claims training")
        ids = array_of(a, "pending_ids", "i")
        counts = array_of(a, "pending_counts", "i", len(ids))
        if (ids < 0).any() or (counts < 0).any() or len(np.unique(ids)) != len(ids):
            raise ValueError("image ids or descriptor counts are negative, or ids repeat")
        self._pending = dict(zip(ids.tolist(), counts.tolist()))
        self._pending_descriptors = int(counts.sum())


class _DescriptorSample:
    """A uniform random sample of a stream of descriptor sets, of unknown total length,
    held within twice the size training needs.

    Each descriptor is kept with probability ``rate``; whenever the sample outgrows twice
    `wanted(descriptors seen)`, the rate halves and the sample keeps only the rows whose
    random key falls under the new rate: still a uniform sample of everything seen. As
    `wanted` grows more slowly than the stream (about its square root), the final sample
    holds at least what training wants and at most twice that.
    """

    def __init__(self, wanted: Callable[[int], int]) -> None:
        self._wanted = wanted
        self._rng = np.random.default_rng(_SEED)
        self.rate = 1.0
        self.seen = 0
        self._rows: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._kept = 0

    def add(self, descriptors: np.ndarray) -> None:
        """Sample one image's descriptors."""
        self.seen += len(descriptors)
        keys = self._rng.random(len(descriptors), dtype=np.float32)
        keep = keys < self.rate
        if keep.any():
            self._rows.append(descriptors[keep])
            self._keys.append(keys[keep])
            self._kept += int(keep.sum())
        if len(self._rows) > _PIECES:
            self._thin(self.rate)
        while self._kept > 2 * self._wanted(self.seen):
            self._thin(self.rate / 2)

    def rows(self) -> np.ndarray:
        """The sample, (n, dim)."""
        if not self._rows:
            return np.zeros((0, 0), np.uint8)
        self._thin(self.rate)
        return self._rows[0]

    def _thin(self, rate: float) -> None:
        """Keep the rows whose key is under `rate`, in one array (a few per image, held
        as one array per image, would cost more in array headers than in data)."""
        rows, keys = np.concatenate(self._rows), np.concatenate(self._keys)
        keep = keys < rate
        self.rate, self._rows, self._keys, self._kept = rate, [rows[keep]], [keys[keep]], int(keep.sum())


def _batches(items: Iterable[tuple[int, LocalFeatures]], descriptors: int) -> Iterator[list[tuple[int, LocalFeatures]]]:
    """`items` in lists holding about `descriptors` descriptors (one image at least)."""
    batch: list[tuple[int, LocalFeatures]] = []
    held = 0
    for item in items:
        batch.append(item)
        held += len(item[1])
        if held >= descriptors:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch
