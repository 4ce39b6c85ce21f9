"""Helpers for the ANN, bundle, filter and consistency tests.

Synthetic bundles use a stub extractor (small dimension, never embeds) and write rows
with vectors straight into the catalog, as ingest does, so thousands of "images" cost
milliseconds. The photo template is the 50-photo sample plus an exact copy and a
resized PNG copy, indexed once per session with the shared extractor and copied by
each test that changes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from retrieval import Engine
from retrieval.options import EngineOptions
from retrieval.catalog import FileRecord
from retrieval.extractors import Extractor, ExtractorConfig, Manifest
from retrieval.filters import Filter

SAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "sample"
OLD_MTIME = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)  # the "cup" photos are dated back to here


class StubExtractor(Extractor):
    """An extractor of the right shape that refuses to embed: proves nothing is embedded."""

    def __init__(self, dim: int = 32) -> None:
        self.manifest = Manifest(ExtractorConfig(backbone="stub"), dim, "stub-digest",
                                 (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
        self.device = torch.device("cpu")

    def embed(self, pixels: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> np.ndarray:
        raise AssertionError("the stub extractor was asked to embed")


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ids_of(result: tuple[np.ndarray, np.ndarray]) -> list[list[int]]:
    """The ids of an AnnIndex search, per query, without the -1 padding."""
    return [[int(i) for i in row if i >= 0] for row in result[1]]


def trained(index: Any) -> bool:
    """An IVF index past its exact buffer stage (other backends never train)."""
    from retrieval.ann import faiss_index

    return isinstance(index, faiss_index.FaissIVF) and index.index is not None


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around random centres: structured enough for IVF cells to mean something."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim)))
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return unit(x)


@dataclass
class Synthetic:
    """What a synthetic bundle holds, known independently of the library."""

    engine: Engine
    vectors: dict[int, np.ndarray]
    records: dict[int, FileRecord]
    removed: set[int] = field(default_factory=set)

    @property
    def live(self) -> list[int]:
        return sorted(set(self.vectors) - self.removed)

    def exact_top(self, q: np.ndarray, k: int, among: set[int] | None = None) -> list[int]:
        """Brute-force top-k over live vectors (optionally restricted)."""
        ids = [i for i in self.live if among is None or i in among]
        scores = np.stack([self.vectors[i] for i in ids]) @ q
        return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def synthetic_records(vectors: np.ndarray, seed: int = 0, start: int = 0) -> list[FileRecord]:
    """One catalog record per vector, with varied folders, formats, sizes, dates and tags;
    paths are numbered from `start`."""
    rng = np.random.default_rng(seed)
    now = dt.datetime.now(dt.timezone.utc)
    out = []
    for n, vec in enumerate(vectors, start):
        folder = ("alpha", "beta", "gamma")[n % 3]
        fmt = "PNG" if n % 4 == 0 else "JPEG"
        when = now - dt.timedelta(days=int(rng.integers(0, 4000)))
        out.append(FileRecord(
            path=f"/synthetic/{folder}/img_{n:05d}.{'png' if fmt == 'PNG' else 'jpg'}",
            content_hash=hashlib.md5(f"synthetic {seed} {n}".encode()).hexdigest(),
            size=int(rng.integers(1_000, 1_000_000)), mtime_ns=int(when.timestamp() * 1e9),
            width=64, height=64, format=fmt, vector=vec,
            metadata={"tags": ["red"]} if n % 5 == 0 else {},
        ))
    return out


def commit(engine: Engine, records: list[FileRecord]) -> list[int]:
    """Write rows with their vectors into the catalog, as an indexing batch does, then let
    the Engine bring its ANN index in line as after any write.

    The catalog write is the one ingest makes; the empty `Engine.add` that follows is a
    public write with nothing to embed: under the write lock it catches the index up,
    compacts it when due (or switches `auto` to another backend) and saves it.
    """
    ids = engine.catalog.apply(records)
    report = engine.add([])
    assert (report.added, report.embedded, report.failed) == (0, 0, [])
    return ids


# Every backend with parameters small enough for 2,000 vectors; IVF trains at this size.
SMALL_BACKENDS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"train_min": 500, "nprobe": 4},
    "ivfpq": {"train_min": 500, "pq_m": 4, "nprobe": 4},
    "hnsw": {"M": 8, "ef_search": 32},
    "annoy": {"n_trees": 8},
}


def noisy_queries(s: Synthetic, n: int, seed: int) -> np.ndarray:
    """`n` unit queries, each a live vector of `s` plus noise."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(s.live, n)
    dim = len(s.vectors[picks[0]])
    return unit(np.stack([s.vectors[i] for i in picks]) + 0.3 * rng.standard_normal((n, dim)) / np.sqrt(dim))


def recall(s: Synthetic, queries: np.ndarray, k: int = 10, where: Filter | None = None,
           among: set[int] | None = None) -> float:
    """Mean overlap of the Engine's top k with brute force; also checks each result list:
    min(k, eligible) hits, none removed, all eligible (in `among` when given)."""
    eligible = len(among if among is not None else s.live)
    hits = 0
    for q in queries:
        got = [h.id for h in s.engine.search(q, k=k, where=where)]
        want = s.exact_top(q, k, among)
        assert len(got) == len(want) == min(k, eligible)
        assert not set(got) & s.removed
        if among is not None:
            assert set(got) <= among
        hits += len(set(got) & set(want))
    return hits / (min(k, eligible) * len(queries))


def synthetic_bundle(path: Path, vectors: np.ndarray, index: str, params: dict[str, Any] | None = None,
                     seed: int = 0) -> Synthetic:
    """A bundle at `path` holding `vectors` as committed images, its ANN index saved."""
    extractor = StubExtractor(vectors.shape[1])
    engine = Engine.create(path, extractor, backend=index, backend_params=params, options=EngineOptions(device="cpu", workers=0))
    records = synthetic_records(vectors, seed)
    ids = engine.catalog.apply(records)
    engine.reindex()  # one bulk build from the stored vectors, saved
    return Synthetic(engine, {i: r.vector for i, r in zip(ids, records)}, dict(zip(ids, records)))


@dataclass(frozen=True)
class PhotoTemplate:
    """An indexed copy of the sample photos; tests copy `bundle` before changing it."""

    photos: Path
    bundle: Path
    original: Path  # has a byte-identical copy
    exact_copy: Path
    near_source: Path  # has a resized PNG re-encode
    near_copy: Path


_TEMPLATE: dict[str, PhotoTemplate] = {}


def photo_template(base: Path, extractor: Extractor) -> PhotoTemplate:
    """Build the photo bundle once per test session (embedding 51 images takes ~10 s)."""
    if "t" in _TEMPLATE:
        return _TEMPLATE["t"]
    photos = base / "photos"
    shutil.copytree(SAMPLE, photos, ignore=shutil.ignore_patterns("*.md"))
    old = OLD_MTIME.timestamp()
    for p in (photos / "cup").iterdir():
        os.utime(p, (old, old))
    original = sorted((photos / "dolphin").iterdir())[0]
    near_source = sorted((photos / "starfish").iterdir())[0]
    extra = photos / "extra"
    extra.mkdir()
    exact_copy = extra / "dolphin copy.jpg"
    shutil.copy(original, exact_copy)
    near_copy = extra / "starfish small.png"
    with Image.open(near_source) as im:
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.LANCZOS).save(near_copy)
    bundle = base / "bundle"
    with Engine.create(bundle, extractor, options=EngineOptions(device="cpu", workers=0)) as engine:
        engine.index([photos])
    template = PhotoTemplate(photos, bundle, original, exact_copy, near_source, near_copy)
    _TEMPLATE["t"] = template
    return template


def copy_bundle(template: PhotoTemplate, dst: Path) -> Path:
    """A private copy of the template bundle (same photos, same ids)."""
    shutil.copytree(template.bundle, dst, ignore=shutil.ignore_patterns("write.lock"))
    return dst


def ids_by_path(engine: Engine, paths: list[Path]) -> list[int]:
    rows = engine.catalog.rows_by_path([str(p) for p in paths])
    return [rows[str(p)].id for p in paths]
