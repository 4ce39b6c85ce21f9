"""retrieve: content-based image retrieval with CNN embeddings and ANN indexes.

>>> from retrieval import Engine
>>> with Engine.create("indexes/photos", exist_ok=True) as engine:
...     engine.index(["~/Pictures"])
...     hits = engine.search("query.jpg", k=10)
"""

from .engine import Engine, Hit, IndexReport
from .errors import (
    BadImageError, ExtractorMismatchError, IndexBusyError, IndexExistsError, IndexNotFoundError,
    RetrievalError, UnknownNameError, WeightsUnavailableError,
)
from .extractors import ExtractorConfig, Manifest, list_backbones

__all__ = [
    "Engine", "Hit", "IndexReport", "ExtractorConfig", "Manifest", "list_backbones",
    "RetrievalError", "BadImageError", "ExtractorMismatchError", "IndexBusyError",
    "IndexExistsError", "IndexNotFoundError", "UnknownNameError", "WeightsUnavailableError",
]
__version__ = "0.1.0"
