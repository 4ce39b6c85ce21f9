"""Saved payloads: whatever the bytes, `from_bytes` either returns an index that searches
correctly or raises ValueError; it never returns one that fails, or crashes the process,
at the first search (Annoy trusts every node number in its file; FAISS returns any index
type or dimension it finds).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.ann import annoy_index, create_index, load_index
from retrieval.ann.base import AnnIndex, pack, unpack

from ..annhelpers import clustered

DIM = 32
N = 400

# (backend, params): sizes at which the IVF variants train and every search is exhaustive.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "flat": ("flat", {}),
    "ivf": ("ivf", {"train_min": 200, "nlist": 4, "nprobe": 4}),
    "ivfpq": ("ivfpq", {"train_min": 300, "nlist": 4, "nprobe": 4, "pq_m": 8}),
    "hnsw": ("hnsw", {"M": 8, "ef_search": 64}),
    "annoy": ("annoy", {"n_trees": 4}),
}


def _built(variant: str, dim: int = DIM, n: int = N) -> AnnIndex:
    name, params = VARIANTS[variant]
    index = create_index(name, dim, **params)
    index.build(np.arange(1, n + 1, dtype=np.int64), clustered(n, dim, 5, seed=dim))
    return index


def _load(variant: str, payload: bytes) -> AnnIndex:
    name, params = VARIANTS[variant]
    return load_index(name, DIM, payload, params)


def _repacked(payload: bytes, **arrays: np.ndarray | None) -> bytes:
    """The payload with some arrays replaced (None: dropped)."""
    current = unpack(payload)
    for key, value in arrays.items():
        if value is None:
            current.pop(key)
        else:
            current[key] = value
    return pack(current)


def _short(key: str) -> Callable[[bytes], bytes]:
    return lambda p: _repacked(p, **{key: unpack(p)[key][:-3]})


def _random_trees(payload: bytes) -> bytes:
    trees = unpack(payload)["trees"]
    return _repacked(payload, trees=np.random.default_rng(0).integers(0, 256, len(trees), dtype=np.uint8))


def _tree_pointing_outside(payload: bytes) -> bytes:
    """One split node's child set past the last node: plausible everywhere else."""
    trees = unpack(payload)["trees"].view(np.int32).reshape(-1, DIM + 4).copy()
    split = int(np.flatnonzero(trees[N:, 0] > DIM + 3)[0]) + N
    trees[split, 1] = len(trees) + 1000
    return _repacked(payload, trees=trees.reshape(-1).view(np.uint8))


COMMON: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda p: b"",
    "garbage": lambda p: np.random.default_rng(1).integers(0, 256, len(p), dtype=np.uint8).tobytes(),
    "truncated": lambda p: p[: len(p) // 2],
    "npy-not-npz": lambda p: _npy(np.arange(5)),
}
SPECIFIC: dict[str, dict[str, Callable[[bytes], bytes]]] = {
    "flat": {},
    "ivf": {"no-trained_on": lambda p: _repacked(p, trained_on=None),
            "negative-trained_on": lambda p: _repacked(p, trained_on=np.array(-1)),
            "buffer-not-bytes": lambda p: _repacked(p, buffer=np.zeros(3, np.float32))},
    "ivfpq": {"no-buffer": lambda p: _repacked(p, buffer=None)},
    "hnsw": {"short-labels": _short("labels"), "short-dead": _short("dead"),
             "dead-as-ints": lambda p: _repacked(p, dead=unpack(p)["dead"].astype(np.int64)),
             "labels-2d": lambda p: _repacked(p, labels=unpack(p)["labels"].reshape(-1, 2)),
             "a-live-id-twice": lambda p: _repacked(p, labels=np.full(N, 7, np.int64))},
    "annoy": {"short-labels": _short("labels"), "random-trees": _random_trees,
              "tree-pointing-outside": _tree_pointing_outside, "no-trees": lambda p: _repacked(p, trees=None),
              "an-id-twice": lambda p: _repacked(p, labels=np.full(N, 7, np.int64))},
}


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


CASES = [(v, d) for v in VARIANTS for d in [*COMMON, *SPECIFIC[v]]]


@pytest.mark.parametrize("variant,damage", CASES, ids=[f"{v}-{d}" for v, d in CASES])
def test_a_damaged_payload_raises_value_error(variant: str, damage: str) -> None:
    payload = _built(variant).to_bytes()
    damaged = {**COMMON, **SPECIFIC[variant]}[damage](payload)
    with pytest.raises(ValueError):
        _load(variant, damaged)


OTHERS = [(v, o) for v in VARIANTS for o in VARIANTS if o != v and {v, o} != {"ivf", "ivfpq"}]


@pytest.mark.parametrize("variant,other", OTHERS + [("ivf", "ivfpq"), ("ivfpq", "ivf")],
                         ids=[f"{v}-from-{o}" for v, o in OTHERS + [("ivf", "ivfpq"), ("ivfpq", "ivf")]])
def test_another_backend_s_payload_is_refused(variant: str, other: str) -> None:
    with pytest.raises(ValueError):
        _load(variant, _built(other).to_bytes())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_payload_of_another_dimension_is_refused(variant: str) -> None:
    with pytest.raises(ValueError, match="dimension|nodes|trees"):
        _load(variant, _built(variant, dim=16).to_bytes())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_intact_payloads_pass_the_checks_also_empty_or_emptied(variant: str) -> None:
    """The checks accept every state a real index saves: full, empty, all removed."""
    index = _built(variant)
    queries = clustered(5, DIM, 5, seed=DIM)
    loaded = _load(variant, index.to_bytes())
    np.testing.assert_array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])
    empty = create_index(VARIANTS[variant][0], DIM, **VARIANTS[variant][1])
    empty.build(np.empty(0, np.int64), np.empty((0, DIM), np.float32))
    assert _load(variant, empty.to_bytes()).ntotal == 0
    index.remove(np.arange(1, N + 1))
    emptied = _load(variant, index.to_bytes())
    assert emptied.ntotal == 0 and (emptied.search(queries, 5)[1] == -1).all()


class _FailingAnnoy(annoy_index.annoy.AnnoyIndex):
    def load(self, path: str, prefault: bool = False) -> bool:
        raise OSError(f"cannot map {path}")


def test_annoy_loads_leave_no_temp_file_even_when_they_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Annoy loads its trees from a file: the temp copy goes, whether the load works or not."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    payload = _built("annoy").to_bytes()
    assert _load("annoy", payload).ntotal == N
    assert not list(scratch.iterdir())
    monkeypatch.setattr(annoy_index.annoy, "AnnoyIndex", _FailingAnnoy)
    with pytest.raises(OSError, match="cannot map"):
        _load("annoy", payload)
    assert not list(scratch.iterdir()), "a failed load leaked its temp copy of the trees"
