"""A damaged `ann.index` never breaks a command, on any backend.

Through the Engine: the file is truncated, cut to its header, flipped in one byte
(caught by its checksum: a flipped exact index used to load and answer wrongly), or
crafted with a valid checksum but a content that does not hold together. Each time the
file is discarded with a warning, the index is rebuilt from the catalog, searches answer
exactly as after a clean rebuild, and the rebuilt index is saved over the damaged file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval import Engine
from retrieval.ann import create_index
from retrieval.ann.base import pack, unpack
from retrieval.bundle import read_bundle_file, save_atomic
from retrieval.engine import ANN_FILE

from ..annhelpers import StubExtractor, Synthetic, clustered, synthetic_bundle, unit

DIM = 32
N = 600
K = 5

# Parameters that make every backend's search exhaustive at N vectors, so a rebuild
# answers the same whatever its threads did.
BACKENDS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"train_min": 200, "nlist": 4, "nprobe": 4},
    "ivfpq": {"train_min": 300, "nlist": 4, "nprobe": 4, "pq_m": 8},
    "hnsw": {"M": 16, "ef_search": 1024},
    "annoy": {"n_trees": 4},
}

Header = dict[str, Any]


def _flip(raw: bytes) -> bytes:
    body = raw.index(b"\n") + 1
    middle = body + (len(raw) - body) // 2
    return raw[:middle] + bytes([raw[middle] ^ 0x10]) + raw[middle + 1:]


RAW: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda raw: b"",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "header-only": lambda raw: raw[: raw.index(b"\n") + 1],
    "cut-in-the-header": lambda raw: raw[: raw.index(b"\n") // 2],
    "flipped-byte": _flip,
    "header-not-json": lambda raw: b"not json\n" + raw[raw.index(b"\n") + 1:],
    "header-not-an-object": lambda raw: b"[1, 2]\n" + raw[raw.index(b"\n") + 1:],
}


def _payload_of(backend: str, dim: int) -> bytes:
    index = create_index(backend, dim, **BACKENDS[backend])
    index.build(np.arange(1, N + 1, dtype=np.int64), clustered(N, dim, 4, seed=dim))
    return index.to_bytes()


def _repacked(payload: bytes, key: str, value: np.ndarray) -> bytes:
    return pack({**unpack(payload), key: value})


# Crafted files carry a valid checksum: (header, payload, backend) -> (header, payload).
CRAFTED: dict[str, Callable[[Header, bytes, str], tuple[Header, bytes]]] = {
    "unknown-parameter": lambda h, p, b: ({**h, "params": {**h["params"], "bogus": 1}}, p),
    "parameters-not-a-mapping": lambda h, p, b: ({**h, "params": [1]}, p),
    "unknown-backend": lambda h, p, b: ({**h, "backend": "lsh"}, p),
    "count-mismatch": lambda h, p, b: ({**h, "count": h["count"] + 1}, p),
    "generation-not-an-integer": lambda h, p, b: ({**h, "generation": str(h["generation"])}, p),
    "payload-of-another-dimension": lambda h, p, b: (h, _payload_of(b, 16)),
    "payload-of-another-backend": lambda h, p, b: (h, _payload_of("hnsw" if b == "flat" else "flat", DIM)),
}
ONLY: dict[str, tuple[str, ...]] = {"short-labels": ("hnsw", "annoy"), "random-trees": ("annoy",)}
CRAFTED |= {
    "short-labels": lambda h, p, b: (h, _repacked(p, "labels", unpack(p)["labels"][:-3])),
    "random-trees": lambda h, p, b: (h, _repacked(p, "trees", np.random.default_rng(0).integers(
        0, 256, len(unpack(p)["trees"]), dtype=np.uint8))),
}

CASES = [(b, d) for b in BACKENDS for d in [*RAW, *CRAFTED] if b in ONLY.get(d, (b,))]


def _queries() -> np.ndarray:
    rng = np.random.default_rng(5)
    return unit(clustered(N, DIM, 12, seed=3)[rng.choice(N, 6)] + 0.2 * rng.standard_normal((6, DIM)) / np.sqrt(DIM))


def _answers(engine: Engine) -> list[list[int]]:
    return [[h.id for h in engine.search(q, k=K)] for q in _queries()]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, bytes, list[list[int]]]]]:
    """Per backend: (bundle, its intact index file, the answers of a clean rebuild)."""
    out = {}
    for backend, params in BACKENDS.items():
        s = synthetic_bundle(tmp_path_factory.mktemp(backend), clustered(N, DIM, 12, seed=3), backend, params)
        s.engine.close()
        clean = (s.engine.path / ANN_FILE).read_bytes()
        (s.engine.path / ANN_FILE).unlink()
        with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as engine:
            expected = _answers(engine)
        assert expected == [s.exact_top(q, K) for q in _queries()], "the search must be exhaustive here"
        out[backend] = (s.engine.path, clean, expected)
    yield out


def _damage(file: Path, clean: bytes, backend: str, damage: str) -> None:
    if damage in RAW:
        file.write_bytes(RAW[damage](clean))
        return
    saved = read_bundle_file(file)
    assert saved is not None
    header, payload = CRAFTED[damage](*saved, backend)
    save_atomic(file, header, payload)


@pytest.mark.parametrize("backend,damage", CASES, ids=[f"{b}-{d}" for b, d in CASES])
def test_a_damaged_index_file_is_discarded_and_rebuilt(bundles: dict, backend: str, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path, clean, expected = bundles[backend]
    file = path / ANN_FILE
    file.write_bytes(clean)
    _damage(file, clean, backend, damage)
    try:
        with caplog.at_level(logging.WARNING, logger="retrieval"):
            with Engine.open(path, extractor=StubExtractor(DIM)) as engine:
                assert _answers(engine) == expected
                shown = engine.info()["index"]
                assert (shown["effective"], shown["count"]) == (backend, N)
        assert [r for r in caplog.records if "discarding the ANN index" in r.getMessage()], "no warning"
        rebuilt = read_bundle_file(file)  # raises if the damaged file were still there
        assert rebuilt is not None and rebuilt[0]["count"] == N
    finally:
        file.write_bytes(clean)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_writer_meets_a_damaged_file_and_goes_on(tmp_path: Path, backend: str) -> None:
    """A write (here a removal) after the damage: rebuilt, applied, saved intact."""
    s: Synthetic = synthetic_bundle(tmp_path / "b", clustered(N, DIM, 12, seed=3), backend, BACKENDS[backend])
    s.engine.close()
    file = s.engine.path / ANN_FILE
    file.write_bytes(_flip(file.read_bytes()))
    gone = s.live[7]
    with Engine.open(s.engine.path, extractor=StubExtractor(DIM)) as engine:
        assert engine.remove([gone]) == 1
        s.removed.add(gone)
        q = s.vectors[gone]
        assert [h.id for h in engine.search(q, k=K)] == s.exact_top(q, K)
    header, _ = read_bundle_file(file)
    assert header["count"] == N - 1
