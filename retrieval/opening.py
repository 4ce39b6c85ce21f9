"""How a bundle comes into being and is opened: its file names, creation, opening.

A bundle is a folder holding ``catalog.sqlite`` (the truth), ``ann.index`` (a cache of its
vectors), ``local.index`` in an index that keeps local features (a cache of them: vocabulary
and inverted file) and ``write.lock``. Creation checks every argument before it writes anything, so
a typo leaves no bundle, and writes the manifest last: a catalog without one is a creation
that was interrupted, which the next :meth:`Engine.create` finishes as if new and which
:meth:`Engine.open` refuses with the command that finishes it.

Nothing here imports torch unless a model must be built now (a new bundle's, or other
weights given to an existing one): opening a bundle for its catalog (``retrieve info``,
``retrieve tag``) stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ann
from .catalog import Catalog
from .errors import IndexNotFoundError, RetrievalError
from .extractors import ExtractorConfig, Manifest
from .extractors.spec import ExtractorSpec, extractor_for
from .options import EngineOptions

if TYPE_CHECKING:
    from .extractors import Extractor
    from .extractors.denoise import Denoiser

__all__ = ["ANN_FILE", "CATALOG_FILE", "LOCAL_FILE", "LOCK_FILE", "Opened", "create_bundle", "denoiser_for",
           "has_manifest", "local_settings", "open_bundle"]

CATALOG_FILE = "catalog.sqlite"
ANN_FILE = "ann.index"
LOCAL_FILE = "local.index"
LOCK_FILE = "write.lock"
LOCAL_SETTING = "local_features"  # catalog setting: {"name": ..., "params": {...}}, absent without


@dataclass
class Opened:
    """What an Engine is made of once its bundle is created or opened.

    `extractor` None means the manifest's own model, built on first embedding.
    """

    catalog: Catalog
    manifest: Manifest
    extractor: Extractor | None = None
    denoiser: Denoiser | None = None
    local: dict[str, Any] | None = None  # the local-feature settings, in an index that keeps them


def has_manifest(path: Path) -> bool:
    """Whether a finished bundle is at `path` (a catalog without a manifest is an
    interrupted creation, which :func:`create_bundle` finishes)."""
    if not (path / CATALOG_FILE).is_file():
        return False
    with contextlib.closing(Catalog(path / CATALOG_FILE)) as catalog:
        return catalog.get_json("manifest") is not None


def denoiser_for(options: EngineOptions) -> Denoiser | None:
    """The denoiser `options` ask for, loaded now (so a bad checkpoint fails before any
    write), or None."""
    if not options.denoise:
        return None
    from .extractors.denoise import Denoiser  # torch

    return Denoiser(options.denoise, options.device, options.precision)


def local_settings(spec: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The checked local-feature settings an index records: a registry name (``"sift"``)
    or ``{"name": ..., "params": {...}}``; None keeps no local features.

    Raises:
        UnknownNameError: no such local-feature extractor.
        RetrievalError: a parameter it does not have, or out of range.
        LocalFeaturesUnavailableError: OpenCV (the ``local`` extra) is not installed.
    """
    if spec is None:
        return None
    from . import local  # no OpenCV yet
    from .local.opencv import opencv

    name, params = (spec, {}) if isinstance(spec, str) else (spec.get("name", ""), spec.get("params") or {})
    resolved = local.EXTRACTORS.resolve(str(name), params)
    opencv()  # an index that could never extract its features is refused before it exists
    return {"name": name, "params": resolved}


def create_bundle(path: Path, built: Extractor | None, config: ExtractorConfig | None, overrides: Mapping[str, Any],
                  backend: str | None, backend_params: Mapping[str, Any] | None, options: EngineOptions,
                  local: str | Mapping[str, Any] | None = None,
                  calibration: Sequence[str | os.PathLike[str]] | None = None) -> Opened:
    """Write a new bundle at `path` (or finish one whose creation was interrupted).

    `calibration`: image files or folders an int8 extractor is calibrated on.

    The extractor is given split (see :func:`.extractors.spec.split_spec`); none given
    is the default one. The backend's settings are checked before the model loads, then
    again once its dimension is known (IVF-PQ's `pq_m` must divide it), and only then
    is anything written.

    Raises:
        RetrievalError: a bad backend, parameter, extractor or denoiser (nothing written).
    """
    name = backend or ann.AUTO
    params = ann.check_settings(name, backend_params or {})  # fails before the model loads
    local_features = local_settings(local)
    denoiser = denoiser_for(options)
    if built is None:
        from .runtimes import create_runtime_extractor

        built = create_runtime_extractor(config or ExtractorConfig(**overrides), options.device, options.precision,
                                         options.runtime, calibration=calibration)
    params = ann.check_settings(name, params, built.manifest.dim)  # checks that need the dimension
    path.mkdir(parents=True, exist_ok=True)
    if built.manifest.precision == "int8":  # the graph travels with the index (see runtimes.quantize)
        from .runtimes.quantize import keep_in_bundle
        from .runtimes.session import GraphExtractor

        assert isinstance(built, GraphExtractor)
        try:
            keep_in_bundle(built.graph, path)
        except OSError as e:
            raise RetrievalError(f"cannot write {path}: {e.strerror or e}") from None
    catalog = Catalog(path / CATALOG_FILE, create=True)
    try:
        catalog.set_setting("index", json.dumps({"backend": name, "params": params}))
        if local_features is not None:
            catalog.set_setting(LOCAL_SETTING, json.dumps(local_features))
        catalog.set_setting("manifest", built.manifest.to_json())  # last: its presence means "created"
        return Opened(catalog, built.manifest, built, denoiser, local_features)
    except BaseException:
        catalog.close()
        raise


def open_bundle(path: Path, extractor: ExtractorSpec, options: EngineOptions) -> Opened:
    """Open the finished bundle at `path`, checking `extractor` against its manifest
    (see :func:`.extractors.spec.extractor_for`).

    Raises:
        IndexNotFoundError: no bundle at `path`, or its creation never finished.
        ExtractorMismatchError: `extractor` is not the one the index was built with.
    """
    if not (path / CATALOG_FILE).is_file():
        raise IndexNotFoundError(f"no index at {path} (create one with `retrieve index DIR --index-dir {path}`, "
                                 "or point at another with --index-dir NAME|PATH; `retrieve indexes` lists the named ones)")
    catalog = Catalog(path / CATALOG_FILE)
    try:
        raw = catalog.get_json("manifest")
        if raw is None:
            raise IndexNotFoundError(f"the creation of the index at {path} was interrupted: run the same "
                                     "`retrieve index` command (or Engine.create) again to finish it")
        manifest = Manifest.from_dict(raw)
        built = extractor_for(manifest, extractor, path, options.device, options.precision)
        return Opened(catalog, manifest, built, denoiser_for(options), catalog.get_json(LOCAL_SETTING))
    except BaseException:
        catalog.close()
        raise
