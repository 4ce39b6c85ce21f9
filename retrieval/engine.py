"""The Engine: the one object every front end (CLI, server, user code) calls.

A bundle is a folder holding ``catalog.sqlite`` (the truth) and ``ann.index`` (a cache
of its vectors, rebuilt or caught up from the catalog whenever it is missing or stale).
:mod:`.opening` creates and opens it, :mod:`.writing` changes what it indexes,
:mod:`.searching` (the search methods, with :mod:`.query` ranking) and :mod:`.viewing` (what a
front end shows) are parts of the Engine class kept in their own modules. The extractor is built once per Engine, on
first need, and stays warm.

Opening a bundle for its catalog (``retrieve info``, ``retrieve tag``) must stay light:
no torch, FAISS or Annoy, and neither the query code (Pillow) nor the indexing code; each
loads in the method that first needs it.
"""

from __future__ import annotations

import functools
import importlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any


from .bundle import AnnCache, WriteLock
from .catalog import STATUS_OK, Catalog
from .errors import IndexExistsError
from .extractors import Manifest
from .extractors.spec import ExtractorSpec, split_spec
from .instance import LocalSide, require_local
from .opening import ANN_FILE, CATALOG_FILE, LOCAL_FILE, LOCK_FILE, create_bundle, has_manifest, open_bundle
from .options import EngineOptions, Progress
from .searching import Searching
from .viewing import Viewing

if TYPE_CHECKING:

    from .ann import SearchIndex
    from .cluster import RayJob
    from .extractors import Extractor
    from .extractors.denoise import Denoiser, DenoisingExtractor
    from .indexing.run import IndexReport
    from .query import Hit, Query, QueryBuilder
    from .writing import Writer

# The bundle's file names are part of this module's interface (tests and tools name them).
__all__ = ["ANN_FILE", "CATALOG_FILE", "LOCK_FILE", "Engine", "Hit", "IndexReport", "Query"]

_LAZY = {"Hit": "query", "Query": "query", "IndexReport": "indexing.run"}  # Pillow; torch


def __getattr__(name: str) -> Any:
    """The re-exported names whose modules are heavy, on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Engine(Searching, Viewing):
    """Index images and search them. Use :meth:`create` or :meth:`open`.

    Example:
        >>> with Engine.open("indexes/default") as engine:
        ...     for hit in engine.search("photo.jpg", k=5):
        ...         print(hit.score, hit.path)
    """

    def __init__(self, path: Path, catalog: Catalog, manifest: Manifest, options: EngineOptions,
                 extractor: Extractor | None = None, denoiser: Denoiser | None = None,
                 local: Mapping[str, Any] | None = None) -> None:
        """Use :meth:`create` or :meth:`open`: they check the bundle and the options first."""
        self.local_features = dict(local) if local else None  # {"name", "params"} when kept
        self._local = LocalSide(path / LOCAL_FILE, catalog, manifest.weights_digest, local) if local else None
        self.path = path
        self.catalog = catalog
        self.manifest = manifest
        self.options = options
        self._extractor = extractor
        self.denoiser = denoiser
        self._denoising: DenoisingExtractor | None = None
        self._query_builder: QueryBuilder | None = None
        self._lock = WriteLock(path / LOCK_FILE, options.lock_timeout)
        self.load_seconds = 0.0
        settings = catalog.get_json("index") or {"backend": "flat", "params": {}}
        self._cache = AnnCache(path / ANN_FILE, catalog, manifest.dim, manifest.weights_digest,
                               settings["backend"], settings["params"], settings.get("whitening"))

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, path: str | os.PathLike[str], extractor: ExtractorSpec = None, *,
               backend: str | None = None, backend_params: Mapping[str, Any] | None = None,
               exist_ok: bool = False, options: EngineOptions | None = None,
               local_features: str | Mapping[str, Any] | None = None,
               calibration: Sequence[str | os.PathLike[str]] | None = None) -> Engine:
        """Create a new bundle at `path`; with `exist_ok`, open it if it exists and fits.

        Every argument is checked before anything is written: a typo leaves no bundle.
        A bundle whose creation was interrupted (a catalog without a manifest) is
        finished here, as if new.

        Args:
            extractor: what embeds the images (see :data:`ExtractorSpec`): a built
                Extractor (shared, already warm), an ExtractorConfig, a mapping of
                config fields, a backbone name, or a `retrieve train` checkpoint's path;
                None is the default (tf_efficientnet_lite0, GeM). For an existing bundle,
                each given field must equal the stored one (a weights file may differ
                if it holds the same weights).
            backend: ANN backend of a new bundle: flat, ivf, ivfpq, hnsw, annoy, or auto
                (by collection size, the default). An existing bundle keeps its own: switch
                with :meth:`reindex`.
            backend_params: the backend's parameters (nlist, nprobe, M, ef_search, ...).
            options: how this Engine runs (device, precision, batch size, ...).
            local_features: keep local features for finding the same object (see
                :mod:`.instance`): ``"sift"`` (RootSIFT) or ``{"name": "sift", "params":
                {...}}``; needs the ``local`` extra. Chosen at creation: an existing
                bundle must have been created with the same.
            calibration: image files or folders (those about to be indexed); used only by
                a new bundle with ``options.precision="int8"``, whose quantised graph is
                calibrated on up to 200 of their images spread over them (recorded by digest
                in the manifest).

        Raises:
            IndexExistsError: a bundle exists and `exist_ok` is False.
            ExtractorMismatchError: it exists with another extractor.
            RetrievalError: a bad option, backend or parameter (nothing is written).
        """
        path, options = Path(path), options or EngineOptions()
        built, config, overrides = split_spec(extractor)
        if has_manifest(path):
            if not exist_ok:
                raise IndexExistsError(f"an index already exists at {path}")
            engine = cls.open(path, options=options, extractor=built or config or overrides)
            try:
                engine._cache.require(backend, backend_params)
                if local_features is not None:
                    require_local(path, engine.local_features, local_features)
            except BaseException:
                engine.close()
                raise
            return engine
        made = create_bundle(path, built, config, overrides, backend, backend_params, options, local_features,
                             calibration)
        return cls(path, made.catalog, made.manifest, options, made.extractor, made.denoiser, made.local)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, options: EngineOptions | None = None,
             extractor: ExtractorSpec = None) -> Engine:
        """Open an existing bundle. The model loads lazily, on first embedding.

        Args:
            extractor: normally None (the bundle's own). A built Extractor is checked
                against the manifest; a config, mapping (e.g. ``{"weights": "moved.pth"}``),
                name or checkpoint path is checked field by field, and one with other
                weights is built now to check their digest.

        Raises:
            IndexNotFoundError: no bundle at `path`, or its creation never finished.
            ExtractorMismatchError: `extractor` is not the one the index was built with.
        """
        path, options = Path(path), options or EngineOptions()
        made = open_bundle(path, extractor, options)
        return cls(path, made.catalog, made.manifest, options, made.extractor, made.denoiser, made.local)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ extractor

    @property
    def extractor(self) -> Extractor:
        """The warm model; built on first use (run by the options' runtime) and checked
        against the manifest."""
        if self._extractor is None:
            from .runtimes import create_runtime_extractor
            from .runtimes.quantize import restore_from_bundle

            start = time.perf_counter()
            restore_from_bundle(self.manifest, self.path)  # an int8 index's graph, if this machine lacks it
            built = create_runtime_extractor(self.manifest.config, self.options.device, self.options.precision,
                                             self.options.runtime, self.manifest)
            self.manifest.check_compatible(built.manifest, "extractor available here")
            self._extractor = built
            self.load_seconds = time.perf_counter() - start
        return self._extractor

    @property
    def _queries(self) -> QueryBuilder:
        """What turns a query (paths, images, vectors, ids) into one vector; made on first use."""
        if self._query_builder is None:
            from .query import QueryBuilder

            self._query_builder = QueryBuilder(self.catalog, self.manifest.dim, self.manifest.config.image_size,
                                               lambda images: self.embedder("query").embed_images(images),
                                               self._local.extractor.max_side if self._local else 0,
                                               self._local.query_extractor.extract if self._local else None)
        return self._query_builder

    def embedder(self, stage: str) -> Extractor:
        """The extractor for images embedded at `stage` ("query" or "index"): with a
        denoiser set for that stage, one that cleans each image first."""
        if self.denoiser is None or self.options.denoise_at not in (stage, "both"):
            return self.extractor
        if self._denoising is None or self._denoising.inner is not self.extractor:
            from .extractors.denoise import DenoisingExtractor
            from .runtimes import runtime_denoiser  # the denoiser runs where the extractor does
            self._denoising = DenoisingExtractor(self.extractor, runtime_denoiser(self.denoiser, self.extractor))
        return self._denoising

    # ------------------------------------------------------------------ writing

    def index(self, roots: Iterable[str | os.PathLike[str]], progress: Progress | None = None,
              follow_links: bool = False, ray: str | RayJob | None = None) -> IndexReport:
        """Bring the index in line with the image files below `roots`.

        New and changed files are embedded, unchanged ones skipped without decoding,
        vanished ones removed. Safe to interrupt: a rerun finishes the job. Symbolic
        links that lead out of every root are skipped (listed in the report's
        `skipped`) unless `follow_links`: a link to / must not index the machine.
        With `ray` (a cluster's address, "local" to start Ray here, or a
        :class:`~retrieval.cluster.RayJob`), what must be embedded is embedded by a Ray job
        (needs the ``ray`` extra; see :mod:`retrieval.cluster`).

        Raises:
            RetrievalError: a root does not exist (nothing is removed in that case).
        """
        return self._writer.sync(roots, follow_links, progress, ray)

    def add(self, paths: Iterable[str | os.PathLike[str]], metadata: Mapping[str, Any] | None = None,
            progress: Progress | None = None) -> IndexReport:
        """Index these files (no sweep of anything else). Bad files are recorded, not raised.

        Args:
            metadata: user metadata stored with every added file: JSON values with finite
                numbers, under keys that filters can name (letters, digits, _ and -).

        Raises:
            BadMetadataError: `metadata` breaks those rules (checked before any work).
        """
        return self._writer.add(paths, metadata, progress)

    def remove(self, ids_or_paths: Iterable[int | str | os.PathLike[str]]) -> int:
        """Remove images by id or path; returns how many were removed."""
        return self._writer.remove(ids_or_paths)

    def set_metadata(self, image_id: int, metadata: Mapping[str, Any]) -> None:
        """Replace the user metadata of one image.

        Raises:
            BadMetadataError: non-finite numbers, non-JSON values, or keys filters cannot name.
        """
        self.catalog.set_metadata(image_id, dict(metadata))

    def update_metadata(self, updates: Mapping[int, Mapping[str, Any]], unset: Sequence[str] = ()) -> None:
        """Set metadata keys of many images (their other keys kept) and drop the `unset`
        keys, in one transaction: all or nothing.

        Raises:
            BadMetadataError: a key or value metadata cannot hold.
            RetrievalError: an id that is not in the index.
        """
        self.catalog.merge_metadata(updates, unset)

    def exclude(self, items: Iterable[int | str | os.PathLike[str]], strict: bool = True) -> tuple[int, list[str]]:
        """Remove images for good: ids, file paths, folders and shell-style patterns
        (``*/drafts/*``) become exclusions in the catalog that every later :meth:`index`
        and :meth:`add` honours (see :mod:`.indexing.exclusions`); what is indexed under
        them is removed now. Returns (images removed, patterns recorded).

        Raises:
            RetrievalError: an id, or with `strict` a file path, that is not in the index
                (nothing changes).
        """
        from .indexing.exclusions import resolve

        ids, patterns = resolve(self.catalog, items, strict)
        self.catalog.change_exclusions(add=patterns)
        return (self.remove(ids) if ids else 0), patterns

    def exclusions(self) -> list[str]:
        """The exclusion patterns in force (see :meth:`exclude`)."""
        return self.catalog.exclusions()

    def forget_exclusions(self, patterns: Iterable[str]) -> list[str]:
        """Stop excluding these patterns (the next :meth:`index` adds what they matched);
        returns those that were recorded."""
        return self.catalog.change_exclusions(drop=patterns)

    def tag(self, ids_or_paths: Iterable[int | str | os.PathLike[str]], add: Sequence[str] = (),
            remove: Sequence[str] = ()) -> int:
        """Add and remove tags on indexed images; returns how many images changed.

        Raises:
            RetrievalError: an id or path is not in the index.
        """
        ids = self.catalog.resolve_ids(ids_or_paths, strict=True)
        return self.catalog.update_tags(sorted(ids), add, remove)

    @functools.cached_property
    def _writer(self) -> Writer:
        """The write side of the bundle, made on the first change."""
        from .writing import Writer

        local = (self._local.extract(), self._local.cache) if self._local else None
        return Writer(self.path, self.catalog, self._cache, self._lock, self.options, lambda: self.embedder("index"),
                      self.manifest, local)

    # ------------------------------------------------------------------ the ANN cache

    @property
    def ann(self) -> SearchIndex:
        """The ANN index, caught up with every committed change.

        An index this process had to rebuild (file missing, stale beyond replay,
        corrupt) is saved for the next process when the lock is free and the disk takes
        it; otherwise it stays in memory (a reader never needs to write).
        """
        return self._cache.read(self._lock)

    def reindex(self, backend: str | None = None, *, whiten: bool | None = None, whiten_dim: int | None = None,
                **params: Any) -> dict[str, Any]:
        """Rebuild the ANN index from the stored vectors, optionally switching backend.

        `whiten` True learns a PCA-whitening from the indexed vectors themselves (a
        sample of at most 100,000; at most `whiten_dim` dimensions, and fewer than the
        images) and compares vectors whitened from then on, queries included; False goes
        back to the vectors as they are; None keeps what the index does. Whitening helps
        instance search (the same book, the same painting: +5 to +13 points of top-1 on
        smvs) and hurts category search (Caltech-101 mAP 0.75 -> 0.29): it is opt-in.
        The catalog keeps the extractor's vectors either way, and similarity thresholds
        (``dedup``, duplicates) then compare whitened vectors.

        No image is read. The new settings are stored only once their index is built and
        saved: a failure leaves the previous settings and index in place. Returns the new
        index description (as in :meth:`info`), with the rebuild's ``seconds``.

        Raises:
            RetrievalError: an unknown backend or a bad parameter, a whitening asked of
                fewer than 2 images or with a bad `whiten_dim` (nothing changes).
        """
        return self._writer.reindex(backend, params, whiten, whiten_dim)

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
                          "pooling_params": dict(c.pooling_params), "image_size": c.image_size, "scales": list(c.scales),
                          "resize": c.resize, "weights_digest": self.manifest.weights_digest,
                          "normalisation": self.manifest.normalisation},
            "index": self._cache.describe(),
            "local_features": self.local_features,
            "generation": self.catalog.generation(), "size_bytes": size,
            "failed": [{"path": r.path, "error": r.error} for r in self.catalog.failed(failed_limit)],
        }
