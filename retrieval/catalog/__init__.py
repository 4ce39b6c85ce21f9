"""The catalog: the bundle's source of truth in SQLite (images, vectors, tombstones, settings).

:mod:`.models` holds the tables, :mod:`.store` the :class:`Catalog` that reads and writes
them, :mod:`.changes` the change log (batches written under a generation, replayed by
caches), :mod:`.migrations` the schema upgrades, :mod:`.connection` how the file is opened
and :mod:`.metadata` what user metadata may hold.
"""

from .changes import Changes, FileRecord
from .metadata import check_metadata
from .models import STATUS_FAILED, STATUS_OK, ImageRow
from .store import Catalog

__all__ = ["STATUS_FAILED", "STATUS_OK", "Catalog", "Changes", "FileRecord", "ImageRow", "check_metadata"]
