"""retrieve: content-based image retrieval with CNN embeddings and ANN indexes.

>>> from retrieval import Engine, index_path
>>> with Engine.create(index_path("photos"), exist_ok=True) as engine:  # the CLI's `-i photos`
...     engine.index(["~/Pictures"])
...     hits = engine.search("query.jpg", k=10)

The public names are loaded on first use (PEP 562), so importing a light part of the
package (the command line's help, the catalog) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BadImageError, BadQueryError, ExtractorMismatchError, IndexBusyError, IndexExistsError, IndexNotFoundError,
    RetrievalError, UnknownNameError, WeightsUnavailableError,
)
from .options import EngineOptions

if TYPE_CHECKING:
    from .engine import Engine, IndexReport
    from .extractors import ExtractorConfig, Manifest, list_backbones
    from .filters import Filter
    from .home import index_path
    from .query import Hit

__all__ = [
    "Engine", "EngineOptions", "Hit", "IndexReport", "Filter", "ExtractorConfig", "Manifest", "list_backbones",
    "index_path",
    "RetrievalError", "BadImageError", "BadQueryError", "ExtractorMismatchError", "IndexBusyError",
    "IndexExistsError", "IndexNotFoundError", "UnknownNameError", "WeightsUnavailableError",
]
__version__ = "0.2.0"

_LAZY = {
    "Engine": "engine", "IndexReport": "engine", "Hit": "query", "Filter": "filters",
    "ExtractorConfig": "extractors", "Manifest": "extractors", "list_backbones": "extractors", "index_path": "home",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
