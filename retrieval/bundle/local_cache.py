"""The local-feature index as a cache of the catalog's stored local features (see
:mod:`.cache` for how it is kept).

It is built from, and caught up with, the features the catalog stores with each image,
never from the images. A stored row that no longer decodes (a damaged BLOB) is skipped
with one warning naming its image: the index must still build, and the image keeps its
global ranking.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..catalog import Catalog, Changes
from ..errors import RetrievalError
from ..local import LocalFeatures, LocalIndex, LocalIndexOptions
from .cache import CatalogCache

__all__ = ["LocalCache"]

log = logging.getLogger(__name__)

INDEX_KEY = "index"  # settings key of the LocalIndexOptions (absent: the defaults)


class LocalCache(CatalogCache[LocalIndex]):
    """Keeps one in-memory :class:`LocalIndex` in step with a catalog.

    Args:
        settings: what the stored features were extracted with, e.g. ``{"extractor":
            "sift", "params": {...}}``, and optionally under ``"index"`` the
            :class:`LocalIndexOptions` by name. JSON-able; recorded in the file, which is
            rebuilt when opened under other settings.

    Raises:
        RetrievalError: settings that are not JSON, or bad index options.
    """

    what = "local-feature index"

    def __init__(self, file: Path, catalog: Catalog, digest: str, settings: Mapping[str, Any]) -> None:
        super().__init__(file, catalog, digest)
        try:  # compared with the header's JSON on load: a tuple would never equal its list
            self._settings: dict[str, Any] = json.loads(json.dumps(dict(settings), allow_nan=False))
        except (TypeError, ValueError) as e:
            raise RetrievalError(f"local-feature settings must be JSON ({e})") from None
        self.options = _options(self._settings)
        self._reported: set[int] = set()  # damaged rows already warned about

    def settings(self) -> dict[str, Any]:
        """The settings given (also recorded in the file)."""
        return dict(self._settings)

    def _build(self, settings: Mapping[str, Any]) -> tuple[LocalIndex, int]:
        generation = self.catalog.generation()
        return LocalIndex.build(self._stored, _options(settings)), generation

    def _stored(self) -> Iterator[tuple[int, LocalFeatures]]:
        """Every image's stored features, one block of rows in memory at a time."""
        for block in self.catalog.iter_local_features():
            yield from self._decoded(block)

    def _add(self, index: LocalIndex, changes: Changes) -> None:
        index.add(self._decoded(self.catalog.local_features(changes.ids.tolist()).items()))

    def _decoded(self, rows: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, LocalFeatures]]:
        """The rows that decode; each damaged one is warned about once by this cache (a
        build reads the catalog twice)."""
        for image_id, data in rows:
            try:
                yield image_id, LocalFeatures.from_bytes(data)
            except ValueError as e:
                if image_id not in self._reported:
                    self._reported.add(image_id)
                    log.warning("the stored local features of image %d are damaged (%s); it is left out of "
                                "the %s", image_id, e, self.what)

    def _from_payload(self, header: Mapping[str, Any], payload: bytes) -> LocalIndex:
        return LocalIndex.from_bytes(payload)


def _options(settings: Mapping[str, Any]) -> LocalIndexOptions:
    """The index options the settings name (the defaults where they name none)."""
    options = settings.get(INDEX_KEY, {})
    if not isinstance(options, Mapping):
        raise RetrievalError(f"local-feature settings: {INDEX_KEY!r} must map option names to values")
    return LocalIndexOptions.of(options)
