"""The Engine: the one object every front end (CLI, server, user code) calls.

A bundle is a folder holding ``catalog.sqlite`` (the truth) and ``ann.index`` (a cache
of its vectors, rebuilt or caught up from the catalog whenever it is missing or stale).
The extractor is built once per Engine, on first need, and stays warm.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from filelock import FileLock, Timeout
from PIL import Image

from . import ann, duplicates, ingest
from .ann.cache import AnnCache
from .catalog import STATUS_OK, Catalog
from .device_decode import check_decode_mode
from .errors import BadImageError, ExtractorMismatchError, IndexBusyError, IndexExistsError, IndexNotFoundError, RetrievalError
from .extractors import Extractor, ExtractorConfig, Manifest, create_extractor, resolve_extractor
from .extractors.bottleneck import check_precision
from .extractors.denoise import DENOISE_AT, Denoiser, DenoisingExtractor
from .filters import Filter
from .images import default_workers, discover, load_image
from .indexer import Plan, plan_sync
from .ingest import IndexReport

__all__ = ["Engine", "Hit", "IndexReport", "Query"]

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
ANN_FILE = "ann.index"
LOCK_FILE = "write.lock"

Progress = Callable[[str, int, int], None]
Query = Union[str, os.PathLike, Image.Image, np.ndarray]


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    path: str
    score: float
    metadata: dict[str, Any]
    duplicates: tuple[str, ...] = ()  # with dedup: paths of lower-ranked copies folded into this hit


class Engine:
    """Index images and search them. Use :meth:`create` or :meth:`open`.

    Example:
        >>> with Engine.open("indexes/default") as engine:
        ...     for hit in engine.search("photo.jpg", k=5):
        ...         print(hit.score, hit.path)
    """

    def __init__(self, path: Path, catalog: Catalog, manifest: Manifest,
                 device: str | torch.device = "auto", extractor: Extractor | None = None,
                 batch_size: int = 32, workers: int | None = None, lock_timeout: float = 30.0,
                 precision: str = "auto", decode: str = "auto",
                 denoise: str | os.PathLike[str] | Denoiser | None = None, denoise_at: str = "both") -> None:
        self.path = path
        self.catalog = catalog
        self.manifest = manifest
        self.device = device
        self.batch_size = batch_size
        self.precision = check_precision(precision)
        self.decode = check_decode_mode(decode)  # where JPEGs are decoded: auto (on a GPU, there), cpu, device
        self.workers = default_workers(workers)
        self._extractor = extractor
        self.denoiser = _denoiser(denoise, denoise_at, device, precision)
        self.denoise_at = denoise_at
        self._denoising: DenoisingExtractor | None = None
        self._lock = FileLock(str(path / LOCK_FILE), timeout=lock_timeout)
        self.load_seconds = 0.0
        settings = catalog.get_json("index") or {"backend": "flat", "params": {}}
        self._cache = AnnCache(path / ANN_FILE, catalog, manifest.dim, manifest.weights_digest,
                               settings["backend"], settings["params"])

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, path: str | os.PathLike[str],
               extractor: Extractor | ExtractorConfig | str | os.PathLike[str] | None = None,
               *, index: str = "auto", index_params: Mapping[str, Any] | None = None,
               exist_ok: bool = False, device: str | torch.device = "auto", **kwargs: Any) -> Engine:
        """Create a new bundle at `path` (or open it, if `exist_ok` and compatible).

        Args:
            extractor: a built Extractor (shared, already warm), an ExtractorConfig, a
                backbone name, or the path of a `retrieve train` checkpoint; None is the
                default (tf_efficientnet_lite0, GeM).
            index: ANN backend: flat, ivf, ivfpq, hnsw, annoy, or auto (by collection size).
            index_params: backend parameters (nlist, nprobe, M, ef_search, n_trees, ...).
            kwargs: batch_size, workers, lock_timeout, precision, decode, denoise (a denoising
                autoencoder checkpoint or Denoiser), denoise_at (query, index or both).

        Raises:
            IndexExistsError: a bundle exists and `exist_ok` is False.
            ExtractorMismatchError: it exists with another extractor.
        """
        path = Path(path)
        built = extractor if isinstance(extractor, Extractor) else None
        if isinstance(extractor, (str, os.PathLike)):
            extractor = resolve_extractor(extractor)
        config = built.manifest.config if built else (extractor or ExtractorConfig())
        if (path / CATALOG_FILE).exists():
            if not exist_ok:
                raise IndexExistsError(f"an index already exists at {path}")
            engine = cls.open(path, device=device, extractor=built, **kwargs)
            if built is None and config != engine.manifest.config:  # e.g. the weights file moved
                engine._adopt(create_extractor(config, device, engine.precision))
            return engine
        index_params = dict(index_params or {})
        _validate_backend(index, index_params)  # every option is checked before anything is written
        check_decode_mode(kwargs.get("decode", "auto"))
        check_precision(kwargs.get("precision", "auto"))
        kwargs["denoise"] = _denoiser(kwargs.get("denoise"), kwargs.get("denoise_at", "both"), device,
                                      kwargs.get("precision", "auto"))
        extractor_obj = built or create_extractor(config, device, kwargs.get("precision", "auto"))
        path.mkdir(parents=True, exist_ok=True)
        catalog = Catalog(path / CATALOG_FILE, create=True)
        catalog.set_setting("manifest", extractor_obj.manifest.to_json())
        catalog.set_setting("index", json.dumps({"backend": index, "params": index_params}))
        return cls(path, catalog, extractor_obj.manifest, device, extractor_obj, **kwargs)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, device: str | torch.device = "auto",
             extractor: Extractor | None = None, **kwargs: Any) -> Engine:
        """Open an existing bundle. The model loads lazily, on first embedding.

        Args:
            extractor: an already built extractor to use (checked against the manifest).

        Raises:
            IndexNotFoundError: no bundle at `path`.
            ExtractorMismatchError: `extractor` is not the one the index was built with.
        """
        path = Path(path)
        if not (path / CATALOG_FILE).is_file():
            raise IndexNotFoundError(f"no index at {path} (create one with `retrieve index DIR --index-dir {path}`)")
        catalog = Catalog(path / CATALOG_FILE)
        raw = catalog.get_json("manifest")
        if raw is None:
            raise RetrievalError(f"index at {path} has no extractor manifest (was its creation interrupted?)")
        manifest = Manifest.from_dict(raw)
        if extractor is not None:
            manifest.check_compatible(extractor.manifest, "given extractor")
        return cls(path, catalog, manifest, device, extractor, **kwargs)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ extractor

    @property
    def extractor(self) -> Extractor:
        """The warm model; built on first use and checked against the manifest."""
        if self._extractor is None:
            start = time.perf_counter()
            built = create_extractor(self.manifest.config, self.device, self.precision)
            self.manifest.check_compatible(built.manifest, "extractor available here")
            self._extractor = built
            self.load_seconds = time.perf_counter() - start
        return self._extractor

    def embedder(self, stage: str) -> Extractor:
        """The extractor for images embedded at `stage` ("query" or "index"): with a
        denoiser set for that stage, one that cleans each image first."""
        if self.denoiser is None or self.denoise_at not in (stage, "both"):
            return self.extractor
        if self._denoising is None or self._denoising.inner is not self.extractor:
            self._denoising = DenoisingExtractor(self.extractor, self.denoiser)
        return self._denoising

    def _adopt(self, extractor: Extractor) -> None:
        """Use this extractor from now on, if it makes the same vectors as the index's."""
        self.manifest.check_compatible(extractor.manifest, "requested extractor")
        self._extractor = extractor

    # ------------------------------------------------------------------ writing

    def index(self, roots: Iterable[str | os.PathLike[str]], progress: Progress | None = None) -> IndexReport:
        """Bring the index in line with the image files below `roots`.

        New and changed files are embedded, unchanged ones skipped without decoding,
        vanished ones removed. Safe to interrupt: a rerun finishes the job.

        Raises:
            RetrievalError: a root does not exist (nothing is removed in that case).
        """
        roots = [os.path.abspath(r) for r in roots]
        for r in roots:
            if not os.path.exists(r):
                raise RetrievalError(f"folder not found: {r}")
        with self._writing():
            files = [str(p) for p in discover(roots)]
            existing = self.catalog.rows_under(roots)
            return self._ingest(plan_sync(self.catalog, files, existing, sweep=True, progress=progress), progress)

    def add(self, paths: Iterable[str | os.PathLike[str]], metadata: Mapping[str, Any] | None = None,
            progress: Progress | None = None) -> IndexReport:
        """Index these files (no sweep of anything else). Bad files are recorded, not raised.

        Args:
            metadata: user metadata stored with every added file (JSON-serialisable).
        """
        files = [os.path.abspath(p) for p in paths]
        with self._writing():
            existing = self.catalog.rows_by_path(files)
            plan = plan_sync(self.catalog, files, existing, sweep=False, progress=progress)
            return self._ingest(plan, progress, dict(metadata) if metadata is not None else None)

    def remove(self, ids_or_paths: Iterable[int | str | os.PathLike[str]]) -> int:
        """Remove images by id or path; returns how many were removed."""
        with self._writing():
            found = self._resolve_ids(ids_or_paths, strict=False)
            if found:
                self.catalog.apply(removals=sorted(found))
                self._persist_index()
            return len(found)

    def set_metadata(self, image_id: int, metadata: Mapping[str, Any]) -> None:
        """Replace the user metadata of one image."""
        self.catalog.set_metadata(image_id, dict(metadata))

    def tag(self, ids_or_paths: Iterable[int | str | os.PathLike[str]], add: Sequence[str] = (),
            remove: Sequence[str] = ()) -> int:
        """Add and remove tags on indexed images; returns how many images changed.

        Raises:
            RetrievalError: an id or path is not in the index.
        """
        ids = self._resolve_ids(ids_or_paths, strict=True)
        return self.catalog.update_tags(sorted(ids), add, remove)

    def _resolve_ids(self, ids_or_paths: Iterable[int | str | os.PathLike[str]], strict: bool) -> set[int]:
        ids, paths = [], []
        for item in ids_or_paths:
            (ids if isinstance(item, (int, np.integer)) else paths).append(item)
        found = set(self.catalog.rows_by_id(ids))
        by_path = self.catalog.rows_by_path(os.path.abspath(p) for p in paths)
        if strict:
            missing = [i for i in ids if int(i) not in found]
            missing += [p for p in paths if os.path.abspath(p) not in by_path]
            if missing:
                raise RetrievalError(f"not in the index: {missing[0]}")
        return found | {r.id for r in by_path.values()}

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the bundle's write lock: one writer at a time, across processes."""
        try:
            self._lock.acquire()
        except Timeout:
            raise IndexBusyError(f"index at {self.path} is being written by another process; try again later") from None
        try:
            yield
        finally:
            self._lock.release()

    def require_config(self, **overrides: Any) -> None:
        """Raise ExtractorMismatchError if any given extractor option differs from the index's.

        Options left at None are not compared (the CLI passes only what the user typed).
        """
        stored = self.manifest.config
        diffs = [f"{k}: index has {getattr(stored, k)!r}, asked for {v!r}"
                 for k, v in overrides.items() if v is not None and getattr(stored, k) != v]
        if diffs:
            raise ExtractorMismatchError(
                f"index at {self.path} was built with another extractor ({'; '.join(diffs)}); "
                "drop those options or use a new --index-dir"
            )

    def _ingest(self, plan: Plan, progress: Progress | None, metadata: dict[str, Any] | None = None) -> IndexReport:
        start = time.perf_counter()
        report = ingest.execute(plan, self.catalog, lambda: self.embedder("index"), self._cache.sync,
                                batch_size=self.batch_size, workers=self.workers, metadata=metadata,
                                progress=progress, decode=self.decode)
        self._persist_index()
        report.seconds = time.perf_counter() - start
        return report

    # ------------------------------------------------------------------ the ANN cache

    @property
    def ann(self) -> ann.AnnIndex:
        """The ANN index, caught up with every committed change.

        An index this process had to rebuild (file missing, stale beyond replay,
        corrupt) is saved for the next process, unless a writer holds the lock.
        """
        index = self._cache.sync()
        if self._cache.rebuilt_unsaved:
            try:
                with self._lock.acquire(timeout=0):
                    self._cache.save()
            except Timeout:
                pass
        return index

    def reindex(self, backend: str | None = None, **params: Any) -> dict[str, Any]:
        """Rebuild the ANN index from the stored vectors, optionally switching backend.

        No image is read. Returns the new index description (as in :meth:`info`).
        """
        backend = backend or self._cache.backend
        if not params and backend == self._cache.backend:
            params = dict(self._cache.params)
        _validate_backend(backend, params)
        with self._writing():
            self.catalog.set_setting("index", json.dumps({"backend": backend, "params": params}))
            self._cache.backend, self._cache.params = backend, params
            self._cache.rebuild()
            self._cache.save()
        return self._cache.describe()

    def _persist_index(self) -> None:
        """After a write: compact if due, then save (we hold the write lock)."""
        self._cache.compact_if_due()
        self._cache.save()

    # ------------------------------------------------------------------ searching

    def embed(self, query: Query | Sequence[Query]) -> np.ndarray:
        """One unit vector for a query: a path, a PIL image, a vector, or several combined.

        Raises:
            BadImageError: a query file cannot be decoded.
        """
        vec, _ = self._query_vector(query)
        return vec

    def search(self, query: Query | Sequence[Query], k: int = 10,
               where: Filter | Mapping[str, Any] | None = None, exclude: Iterable[int] = (),
               dedup: float | None = None) -> list[Hit]:
        """The k indexed images most similar to the query.

        An indexed, unchanged path is looked up rather than re-embedded, and is left
        out of its own results. Several queries are combined into one (mean of their
        unit vectors). `where` is a :class:`Filter`, or a mapping of metadata values.
        `dedup`, a similarity threshold (e.g. 0.95), folds copies and near-copies into
        the best-ranked one (listed in `Hit.duplicates`) and still returns k hits.
        """
        vec, own_ids = self._query_vector(query)
        return self._nearest(vec, k, set(exclude) | own_ids, where, dedup)

    def similar(self, image_id: int, k: int = 10, where: Filter | Mapping[str, Any] | None = None,
                dedup: float | None = None) -> list[Hit]:
        """More like this: neighbours of an indexed image, without the image itself."""
        return self._nearest(self.vectors([image_id]).sum(0), k, {image_id}, where, dedup)

    def recommend(self, positive_ids: Sequence[int], negative_ids: Sequence[int] = (), k: int = 10,
                  where: Filter | Mapping[str, Any] | None = None, negative_weight: float = 0.5) -> list[Hit]:
        """Images like the liked ones and unlike the disliked ones (Rocchio's formula).

        The query is mean(liked) - negative_weight * mean(disliked); the liked and
        disliked images themselves are never returned.
        """
        if not positive_ids:
            raise RetrievalError("recommend needs at least one positive id")
        q = self.vectors(positive_ids).mean(0)
        if negative_ids:
            q = q - negative_weight * self.vectors(negative_ids).mean(0)
        return self._nearest(q, k, set(positive_ids) | set(negative_ids), where)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Stored unit vectors of indexed images, (len(ids), dim); raises on unknown ids."""
        found = self.catalog.vectors(ids)
        missing = [i for i in ids if int(i) not in found]
        if missing:
            raise RetrievalError(f"no indexed image with id {missing[0]}")
        return np.stack([found[int(i)] for i in ids])

    def _query_vector(self, query: Query | Sequence[Query]) -> tuple[np.ndarray, set[int]]:
        items = list(query) if isinstance(query, (list, tuple)) else [query]
        if not items:
            raise RetrievalError("empty query")
        vectors, own_ids, images = [], set(), []
        for item in items:
            if isinstance(item, np.ndarray):
                vectors.extend(np.atleast_2d(item).astype(np.float32))
            elif isinstance(item, Image.Image):
                images.append(item.convert("RGB"))
            else:
                indexed = self._indexed_unchanged(str(item))
                if indexed is not None:
                    own_ids.add(indexed[0])
                    vectors.append(indexed[1])
                else:
                    try:
                        images.append(load_image(item).image)
                    except BadImageError as e:
                        raise BadImageError(f"query image {item}: {e}") from None
        if images:
            vectors.extend(self.embedder("query").embed_images(images))
        mat = np.stack(vectors)
        if mat.shape[1] != self.manifest.dim:
            raise RetrievalError(f"query vector has dimension {mat.shape[1]}, the index {self.manifest.dim}")
        mat /= np.linalg.norm(mat, axis=1, keepdims=True).clip(1e-12)
        q = mat.sum(0)
        return q / max(float(np.linalg.norm(q)), 1e-12), own_ids

    def _indexed_unchanged(self, path: str) -> tuple[int, np.ndarray] | None:
        path = os.path.abspath(path)
        row = self.catalog.rows_by_path([path]).get(path)
        if row is None or row.status != STATUS_OK:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            return None
        vec = self.catalog.vectors([row.id]).get(row.id)
        return (row.id, vec) if vec is not None else None

    def _nearest(self, q: np.ndarray, k: int, exclude: set[int], where: Filter | Mapping[str, Any] | None,
                 dedup: float | None = None) -> list[Hit]:
        if k <= 0:
            return []
        index = self.ann
        q = np.asarray(q, np.float32).reshape(1, -1)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        where = Filter.of(where)
        allowed = self.catalog.ids_matching(where.conditions()) if where else None
        if allowed is not None and len(allowed) == 0:
            return []
        want = k + len(exclude)
        while True:
            found = ann.search_reranked(index, q, want, self.catalog.vectors, allowed)
            pairs = [(i, s) for i, s in found if i not in exclude]
            rows = self.catalog.rows_by_id(i for i, _ in pairs)
            hits = [Hit(i, rows[i].path, s, dict(rows[i].meta or {})) for i, s in pairs
                    if i in rows and rows[i].status == STATUS_OK]
            if dedup is not None and hits:
                by_id = {h.id: h for h in hits}
                folded = duplicates.fold([h.id for h in hits], self.catalog.vectors(list(by_id)),
                                         {i: rows[i].content_hash for i in by_id}, dedup)
                hits = [replace(by_id[head], duplicates=tuple(by_id[d].path for d in dups))
                        for head, dups in folded]
            exhausted = want >= index.ntotal or len(found) < want
            if len(hits) >= k or exhausted:
                return hits[:k]
            want *= 2

    def duplicates(self, threshold: float | None = duplicates.DEFAULT_THRESHOLD,
                   progress: Progress | None = None) -> list[duplicates.DuplicateGroup]:
        """Groups of duplicate images: identical bytes, plus near-copies when `threshold`
        (a cosine similarity) is set; None lists exact duplicates only."""
        if threshold is None:
            return list(duplicates.exact_groups(self.catalog))
        return duplicates.near_groups(self.catalog, self.ann, threshold, progress=progress)

    # ------------------------------------------------------------------ facts

    def __len__(self) -> int:
        return self.catalog.counts().get(STATUS_OK, 0)

    def info(self, failed_limit: int = 20) -> dict[str, Any]:
        """Counts, extractor, index type and size on disk, and the failed files."""
        counts = self.catalog.counts()
        size = sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
        c = self.manifest.config
        return {
            "path": str(self.path), "count": counts.get(STATUS_OK, 0), "failed_count": counts.get("failed", 0),
            "dim": self.manifest.dim,
            "extractor": {"kind": c.kind, "backbone": c.backbone, "pooling": c.pooling,
                          "gem_p": c.gem_p if c.pooling == "gem" else None, "image_size": c.image_size,
                          "resize": c.resize, "weights_digest": self.manifest.weights_digest,
                          "normalisation": self.manifest.normalisation},
            "index": self._cache.describe(),
            "generation": self.catalog.generation(), "size_bytes": size,
            "failed": [{"path": r.path, "error": r.error} for r in self.catalog.failed(failed_limit)],
        }


def _validate_backend(name: str, params: Mapping[str, Any]) -> None:
    """Fail before anything is written if the backend or its parameters are wrong."""
    if name == "auto":
        if params:
            raise RetrievalError("the auto index takes no parameters; name a backend to set them")
        return
    try:
        ann.create_index(name, 64, **params)
    except TypeError as e:
        raise RetrievalError(f"bad parameter for the {name} index: {e}") from None


def _denoiser(denoise: str | os.PathLike[str] | Denoiser | None, denoise_at: str, device: str | torch.device,
              precision: str) -> Denoiser | None:
    """The Denoiser an Engine option stands for (a checkpoint path is loaded here).

    Raises:
        RetrievalError: `denoise_at` is not a stage, or the checkpoint cannot be read.
    """
    if denoise_at not in DENOISE_AT:
        raise RetrievalError(f"denoise_at must be one of {', '.join(DENOISE_AT)}, not {denoise_at!r}")
    return Denoiser(denoise, device, precision) if isinstance(denoise, (str, os.PathLike)) else denoise
