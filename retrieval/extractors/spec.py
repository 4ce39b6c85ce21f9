"""What callers may pass as "the extractor" of a bundle, and how it is checked against the
manifest a bundle already has. Torch-free: a built Extractor is recognised without
importing the model code unless one is actually passed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..errors import ExtractorMismatchError, RetrievalError
from .config import ExtractorConfig, Manifest, check_scales
from .pooling import POOLINGS

if TYPE_CHECKING:
    from .base import Extractor

__all__ = ["ExtractorSpec", "extractor_for", "require_same_fields", "split_spec"]


ExtractorSpec = Union["Extractor", ExtractorConfig, Mapping[str, Any], str, os.PathLike, None]
"""What embeds a bundle's images: a built Extractor, a full ExtractorConfig, a mapping of
some config fields (the rest default, or must match an existing bundle), a backbone name,
or a `retrieve train` checkpoint's path."""


def split_spec(spec: ExtractorSpec) -> tuple[Extractor | None, ExtractorConfig | None, dict[str, Any]]:
    """(built extractor, full config, partial config fields): exactly one is set, or none."""
    if spec is None:
        return None, None, {}
    if isinstance(spec, ExtractorConfig):
        return None, spec, {}
    if isinstance(spec, (str, os.PathLike)):
        from . import resolve_extractor  # the package's: it reads checkpoints and backbone names

        return None, resolve_extractor(spec), {}
    if isinstance(spec, Mapping):
        known = {f.name for f in fields(ExtractorConfig)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise RetrievalError(f"unknown extractor option {unknown[0]!r}; choose {', '.join(sorted(known))}")
        return None, None, {k: v for k, v in spec.items() if v is not None}
    from .base import Extractor  # torch: only a built extractor gets this far

    if isinstance(spec, Extractor):
        return spec, None, {}
    raise RetrievalError(f"extractor must be an Extractor, ExtractorConfig, mapping, name or path, "
                         f"not {type(spec).__name__}")


def require_same_fields(path: Path, stored: ExtractorConfig, asked: Mapping[str, Any]) -> None:
    """Raise ExtractorMismatchError naming each given field that differs from the stored
    config (a weights *path* may differ: its digest is checked when the model is built).

    Pooling parameters compare complete, defaults filled in for the pooling asked for, so
    ``{"pooling": "gem"}`` matches a bundle made with GeM's default exponent.
    """
    pooling = asked.get("pooling", stored.pooling)
    diffs = []
    for key, value in asked.items():
        if key == "weights":
            continue
        if key == "pooling_params":
            value = POOLINGS.resolve(pooling, value)
        elif key == "scales":
            value = check_scales(value)
        if value != getattr(stored, key):
            diffs.append(f"{key}: index has {getattr(stored, key)!r}, asked for {value!r}")
    if diffs:
        raise ExtractorMismatchError(f"index at {path} was built with another extractor ({'; '.join(diffs)}); "
                                     "drop those options or use a new index folder")


def extractor_for(manifest: Manifest, spec: ExtractorSpec, path: Path, device: str,
                  precision: str) -> Extractor | None:
    """The extractor to open the bundle at `path` with: None for the manifest's own (built
    lazily), else one checked against the manifest now.

    A built Extractor is compared with the manifest; a config, mapping, name or checkpoint
    path field by field; one that names other weights (a file that moved) is built here,
    so a wrong file fails at open rather than at the first embedding.

    Raises:
        ExtractorMismatchError: it is not the extractor the bundle was built with.
    """
    built, config, overrides = split_spec(spec)
    if built is not None:
        manifest.check_compatible(built.manifest, "given extractor")
        return built
    if overrides:
        require_same_fields(path, manifest.config, overrides)
        config = replace(manifest.config, weights=overrides.get("weights", manifest.config.weights))
    elif config is not None:
        require_same_fields(path, manifest.config, asdict(config))
    if config is None or config == manifest.config:
        return None
    from . import create_extractor  # torch: only other weights get this far

    built = create_extractor(config, device, precision)
    manifest.check_compatible(built.manifest, "given extractor")
    return built
