"""The bundle's files beside the catalog: caches of the catalog kept in step with it
(:mod:`.cache`, the ANN index in :mod:`.ann_cache`, the local-feature index in
:mod:`.local_cache`), the write lock (:mod:`.lock`), and atomic, checksummed files
(:mod:`.files`)."""

from .ann_cache import AnnCache
from .cache import CachedIndex, CatalogCache
from .files import read_bundle_file, read_bundle_header, remove_leftovers, save_atomic
from .local_cache import LocalCache
from .lock import WriteLock

__all__ = ["AnnCache", "CachedIndex", "CatalogCache", "LocalCache", "WriteLock", "save_atomic", "read_bundle_file",
           "read_bundle_header", "remove_leftovers"]
