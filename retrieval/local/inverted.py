"""An inverted file of visual words: tf-idf bag-of-words search over images.

Each image is a sparse vector over the vocabulary: weight ``tf(count) * idf(word)`` per
word, L2-normalised; a query scores images by cosine. Scoring touches only the posting
lists of the query's words and runs as a few vectorised numpy passes (a gather and a
``bincount``), never a Python loop per posting.

Like an ANN index it is a cache of the catalog (the stored features, assigned to words),
kept in step by :meth:`InvertedFile.add` and :meth:`InvertedFile.remove`, and rebuildable.
Postings live in two segments: a main one, sorted by word, and a recent one holding the
images added since the last merge. Removed images are tombstones until then. Merging
(the recent segment scattered into the main one, tombstones dropped, idf and norms
recomputed) costs a few linear passes over all postings. An index of up to a million postings (about 1,500 images at 1,000 features)
merges at the first search after any write, so its scores are exact. A larger one merges
only once the recent segment outgrows a twentieth of the main one or a fifth of the images
are tombstones; until then scores use the idf of the last merge, which moves by a few
percent at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ann.base import array_of, pack, unpack
from ..errors import BadQueryError, RetrievalError
from .vocabulary import MAX_WORDS

__all__ = ["InvertedFile", "TF_MODES"]

_FORMAT = 1
TF_MODES = ("log", "binary")  # 1 + ln(count), or 1: both damp bursts of one repeated pattern
_EXACT_BELOW = 1 << 20  # postings: below this, every search after a write merges (tens of ms)
_MERGE_FRACTION = 0.05
_MAX_DEAD_FRACTION = 0.2
# tf weight by count (0 never occurs): 1 + ln(count), or 1
_TF_TABLES = {"log": np.concatenate([[0.0], 1.0 + np.log(np.arange(1, 65_536))]).astype(np.float32),
              "binary": np.ones(65_536, np.float32)}
_CHUNK = 1 << 22  # postings per vectorised pass when recomputing norms (bounds temporaries)


@dataclass(frozen=True)
class _Postings:
    """Postings sorted by word: list w is ``slots[indptr[w]:indptr[w + 1]]`` (increasing)."""

    indptr: np.ndarray  # int64 (words + 1,)
    words: np.ndarray   # uint16 (P,): the word of each posting (indptr made explicit)
    slots: np.ndarray   # int32 (P,): image slot
    counts: np.ndarray  # uint16 (P,): occurrences of the word in the image

    @classmethod
    def sorted_by_word(cls, words: np.ndarray, slots: np.ndarray, counts: np.ndarray, n_words: int) -> _Postings:
        """Postings from pairs given in slot order (a stable sort keeps slots increasing)."""
        order = np.argsort(words, kind="stable")
        indptr = np.zeros(n_words + 1, np.int64)
        np.cumsum(np.bincount(words, minlength=n_words), out=indptr[1:])
        return cls(indptr, words[order], slots[order], counts[order])

    def __len__(self) -> int:
        return len(self.slots)

    def merged_with(self, later: _Postings) -> _Postings:
        """These postings and `later`'s (whose slots all come after these) in one sorted
        set, by a linear scatter: each list keeps its order, `later`'s part after ours."""
        indptr = self.indptr + later.indptr
        # a posting at i in word w's list moves up by the other set's postings of words before w
        # (and, for later's, by all of ours of w too)
        mine = np.arange(len(self)) + later.indptr[self.words]
        theirs = np.arange(len(later)) + self.indptr[later.words.astype(np.int64) + 1]
        arrays = []
        for ours, others in ((self.words, later.words), (self.slots, later.slots), (self.counts, later.counts)):
            out = np.empty(len(self) + len(later), ours.dtype)
            out[mine], out[theirs] = ours, others
            arrays.append(out)
        return _Postings(indptr, *arrays)

    def kept(self, live: np.ndarray) -> _Postings:
        """Only the postings of slots where `live` is True, slots renumbered densely."""
        keep = live[self.slots]
        words = self.words[keep]
        indptr = np.zeros_like(self.indptr)
        np.cumsum(np.bincount(words, minlength=len(indptr) - 1), out=indptr[1:])
        renumber = (np.cumsum(live) - 1).astype(np.int32)
        return _Postings(indptr, words, renumber[self.slots[keep]], self.counts[keep])

    def accumulate(self, scores: np.ndarray, query_words: np.ndarray, query_weights: np.ndarray,
                   tf: str) -> None:
        """scores[slot] += query weight x tf of every posting of the query's words."""
        starts = self.indptr[query_words]
        lengths = self.indptr[query_words + 1] - starts
        total = int(lengths.sum())
        if total == 0:
            return
        # positions of all postings of all query words: each list's start, plus 0..length-1
        positions = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
        weights = np.repeat(query_weights, lengths) * _tf(self.counts[positions], tf)
        scores += np.bincount(self.slots[positions], weights=weights, minlength=len(scores))

    def squared_norms(self, idf: np.ndarray, n_slots: int, tf: str) -> np.ndarray:
        """Per slot, the squared length of its tf-idf vector."""
        out = np.zeros(n_slots, np.float64)
        for start in range(0, len(self), _CHUNK):
            part = slice(start, start + _CHUNK)
            w = _tf(self.counts[part], tf) * idf[self.words[part]]
            out += np.bincount(self.slots[part], weights=w * w, minlength=n_slots)
        return out


class InvertedFile:
    """tf-idf bag-of-words index over images keyed by int64 ids (>= 0, as catalog ids).

    Args:
        words: vocabulary size (word ids are 0..words-1).
        tf: "log" (sub-linear, 1 + ln count) or "binary" (presence): how repeats of a word
            in one image count. idf is ``ln(1 + N / df)``: positive even when every image
            holds the word, so a one-image index still ranks.
    """

    def __init__(self, words: int, tf: str = "log") -> None:
        if not (isinstance(words, int) and 1 <= words <= MAX_WORDS):
            raise RetrievalError(f"an inverted file needs 1 to {MAX_WORDS} words, not {words!r}")
        if tf not in TF_MODES:
            raise RetrievalError(f"unknown tf weighting {tf!r}; choose {', '.join(TF_MODES)}")
        self.words = words
        self.tf = tf
        self._ids: list[int] = []           # slot -> id, -1 once removed
        self._slot: dict[int, int] = {}     # live id -> slot
        self._main = _empty_postings(words)
        self._recent: list[tuple[int, np.ndarray, np.ndarray]] = []  # (slot, unique words, counts)
        self._recent_postings: _Postings | None = _empty_postings(words)
        self._idf = np.zeros(words, np.float32)
        self._norms = np.zeros(0, np.float64)
        self._dirty = False  # a write since the last merge

    @property
    def ntotal(self) -> int:
        """How many images the index holds."""
        return len(self._slot)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._slot

    def add(self, image_id: int, words: np.ndarray) -> None:
        """Index image `image_id` by the words of its descriptors (one per descriptor,
        repeats counted). An image without words is held (and removable) but never found.

        Raises:
            RetrievalError: the id is negative or present already, or a word is out of range.
        """
        if not isinstance(image_id, (int, np.integer)) or isinstance(image_id, bool) or image_id < 0:
            raise RetrievalError(f"image id {image_id!r} must be an integer of at least 0")
        if int(image_id) in self._slot:
            raise RetrievalError(f"image {image_id} is in the inverted file already")
        unique, counts = self._word_counts(words, RetrievalError)
        slot = len(self._ids)
        self._ids.append(int(image_id))
        self._slot[int(image_id)] = slot
        self._recent.append((slot, unique.astype(np.uint16), np.minimum(counts, 65535).astype(np.uint16)))
        self._recent_postings = None
        self._dirty = True

    def remove(self, ids: np.ndarray | list[int]) -> None:
        """Forget these images; unknown ids are ignored."""
        for image_id in np.asarray(ids, np.int64).ravel().tolist():
            slot = self._slot.pop(image_id, None)
            if slot is not None:
                self._ids[slot] = -1
                self._dirty = True

    def search(self, query_words: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The `k` images whose word vectors are closest to the query's by cosine, as
        (id, score) best first (ties in insertion order); only images sharing a word with
        the query, and only ids in `allowed` when it is given.

        Raises:
            BadQueryError: `k` below 1, or words that are not integers of this vocabulary.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise BadQueryError(f"k must be a positive integer, not {k!r}")
        unique, counts = self._word_counts(query_words, BadQueryError)
        self._refresh()
        ids = np.asarray(self._ids, np.int64)
        if len(unique) == 0 or len(ids) == 0:
            return []
        weights = _tf(counts, self.tf) * self._idf[unique] ** 2  # query weight x the posting's idf
        scores = np.zeros(len(ids), np.float64)
        for postings in (self._main, self._recent_segment()):
            postings.accumulate(scores, unique, weights, self.tf)
        candidates = np.flatnonzero((scores > 0) & (ids >= 0))
        if allowed is not None:
            candidates = candidates[np.isin(ids[candidates], np.asarray(allowed, np.int64))]
        query_norm = math.sqrt(float(((_tf(counts, self.tf) * self._idf[unique]) ** 2).sum()))
        cosine = scores[candidates] / (self._norms[candidates] * query_norm)
        best = np.lexsort((candidates, -cosine))[:k]
        return [(int(ids[candidates[i]]), float(cosine[i])) for i in best]

    def to_bytes(self) -> bytes:
        """The index as an npz archive (no pickle); tombstones are dropped first."""
        self._merge()
        return pack({"format": np.array([_FORMAT], np.int64), "words": np.array([self.words], np.int64),
                     "tf": np.array([TF_MODES.index(self.tf)], np.int64), "ids": np.asarray(self._ids, np.int64),
                     "indptr": self._main.indptr, "slots": self._main.slots, "counts": self._main.counts})

    @classmethod
    def from_bytes(cls, payload: bytes) -> InvertedFile:
        """The index :meth:`to_bytes` saved.

        Raises:
            ValueError: not such an archive, a newer format, or postings that do not fit
                (lengths, ranges, order, duplicate ids).
        """
        a = unpack(payload, required=("format", "words", "tf", "ids", "indptr", "slots", "counts"))
        if a["format"].tolist() != [_FORMAT]:
            raise ValueError(f"inverted-file format {a['format'].tolist()}; this release reads [{_FORMAT}]")
        words, tf = array_of(a, "words", "i", 1)[0], array_of(a, "tf", "i", 1)[0]
        if not (1 <= words <= MAX_WORDS and 0 <= tf < len(TF_MODES)):
            raise ValueError(f"inverted file of {words} words, tf mode {tf}")
        ids = array_of(a, "ids", "i")
        indptr = array_of(a, "indptr", "i", int(words) + 1)
        slots = array_of(a, "slots", "i")
        counts = array_of(a, "counts", "u", len(slots))
        if (ids < 0).any() or len(np.unique(ids)) != len(ids):
            raise ValueError("image ids are negative or repeated")
        if indptr[0] != 0 or indptr[-1] != len(slots) or (np.diff(indptr) < 0).any():
            raise ValueError("posting-list offsets do not cover the postings in order")
        if len(slots) and ((slots < 0).any() or (slots >= len(ids)).any() or (counts == 0).any()):
            raise ValueError("a posting names no image or counts zero occurrences")
        list_starts = np.zeros(len(slots), bool)
        list_starts[indptr[:-1][indptr[:-1] < len(slots)]] = True
        if (np.diff(slots.astype(np.int64)) <= 0)[~list_starts[1:]].any():
            raise ValueError("a posting list is not in increasing image order")
        index = cls(int(words), TF_MODES[int(tf)])
        index._ids = ids.tolist()
        index._slot = {image_id: slot for slot, image_id in enumerate(index._ids)}
        postings_words = np.repeat(np.arange(words, dtype=np.uint16), np.diff(indptr))
        index._main = _Postings(indptr.astype(np.int64), postings_words, slots.astype(np.int32),
                                counts.astype(np.uint16))
        index._dirty = True
        index._merge()  # idf and norms
        return index

    def _word_counts(self, words: np.ndarray, error: type[RetrievalError]) -> tuple[np.ndarray, np.ndarray]:
        """Distinct words (int64, increasing) and their counts, or `error` if not words."""
        w = np.asarray(words)
        if w.ndim != 1 or (len(w) and w.dtype.kind not in "iu"):
            raise error(f"words must be a one-dimensional integer array, not {w.dtype}{list(w.shape)}")
        if len(w) and (w.min() < 0 or w.max() >= self.words):
            raise error(f"word ids must lie in 0..{self.words - 1}")
        unique, counts = np.unique(w.astype(np.int64), return_counts=True)
        return unique, counts

    def _refresh(self) -> None:
        """Before a search: merge when due, else index the recent images on their own."""
        if not self._dirty:
            return
        dead = len(self._ids) - len(self._slot)
        recent = sum(len(words) for _, words, _ in self._recent)
        if (len(self._main) + recent < _EXACT_BELOW or recent > _MERGE_FRACTION * len(self._main)
                or dead > _MAX_DEAD_FRACTION * len(self._ids)):
            self._merge()
        elif self._recent_postings is None:
            postings = self._recent_segment()
            norms = np.sqrt(postings.squared_norms(self._idf, len(self._ids), self.tf))
            merged_slots = len(self._ids) - len(self._recent)  # recent images hold the last slots
            self._norms = np.concatenate([self._norms[:merged_slots], norms[merged_slots:]])

    def _recent_segment(self) -> _Postings:
        """The recent images' postings, sorted by word (built once per batch of writes)."""
        if self._recent_postings is None:
            slots, words, counts = _concatenate(self._recent)
            self._recent_postings = _Postings.sorted_by_word(words, slots, counts, self.words)
        return self._recent_postings

    def _merge(self) -> None:
        """One main segment of the live images (slots renumbered), idf and norms anew."""
        if not self._dirty:
            return
        ids = np.asarray(self._ids, np.int64)
        merged = self._main.merged_with(self._recent_segment())
        self._main = merged if (ids >= 0).all() else merged.kept(ids >= 0)
        self._ids = ids[ids >= 0].tolist()
        self._slot = {image_id: slot for slot, image_id in enumerate(self._ids)}
        self._recent, self._recent_postings = [], _empty_postings(self.words)
        df = np.diff(self._main.indptr)
        self._idf = np.log1p(len(self._ids) / np.maximum(df, 1)).astype(np.float32)
        self._norms = np.sqrt(self._main.squared_norms(self._idf, len(self._ids), self.tf))
        self._dirty = False


def _tf(counts: np.ndarray, mode: str) -> np.ndarray:
    """Term-frequency weight of occurrence counts: a table look-up (postings hold counts
    of at most 65,535), cheaper than a logarithm per posting."""
    return _TF_TABLES[mode][np.minimum(counts, 65_535)]


def _concatenate(recent: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slots int32, words uint16, counts uint16) of the recent images' postings, in slot order."""
    if not recent:
        return np.zeros(0, np.int32), np.zeros(0, np.uint16), np.zeros(0, np.uint16)
    slots = np.repeat(np.array([s for s, _, _ in recent], np.int32), [len(w) for _, w, _ in recent])
    return slots, np.concatenate([w for _, w, _ in recent]), np.concatenate([c for _, _, c in recent])


def _empty_postings(words: int) -> _Postings:
    return _Postings(np.zeros(words + 1, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.int32),
                     np.zeros(0, np.uint16))
