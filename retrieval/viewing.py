"""What a front end shows of an index: pages of images with their facts, a 2-D map of the
collection, the original files and thumbnails, and query uploads decoded under limits. A
part of :class:`retrieval.engine.Engine` (which inherits it), kept apart so that each
module holds one concept; no model or ANN index is loaded by any of these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from .browse import ImageInfo, Page
    from pathlib import Path

    from .catalog import Catalog
    from .query import QueryBuilder
    from .filters import Filter
    from .pictures import Picture
    from .projection import CollectionMap

__all__ = ["Viewing"]


class Viewing:
    """The browsing methods of :class:`~retrieval.engine.Engine`."""

    if TYPE_CHECKING:  # what the Engine provides
        path: Path
        catalog: Catalog

        @property
        def _queries(self) -> QueryBuilder: ...

    def browse(self, where: Filter | Mapping[str, Any] | None = None, after: int = 0, limit: int = 100) -> Page:
        """A page of the indexed images (id order, ids above `after`), with what the catalog
        knows of each; no model or ANN index is loaded. See :func:`.browse.page`."""
        from .browse import page

        return page(self.catalog, where, after, limit)

    def image_infos(self, ids: Iterable[int]) -> dict[int, ImageInfo]:
        """What the catalog knows about the indexed images among `ids`, by id (unknown ids
        are absent)."""
        from .browse import image_infos

        return image_infos(self.catalog, ids)

    def map(self, limit: int = 5000) -> CollectionMap:
        """Up to `limit` indexed images placed in 2-D by their vectors (PCA), for a front
        end to draw the collection as a map; see :mod:`.projection`."""
        from .projection import collection_map

        return collection_map(self.catalog, limit)

    def original(self, image_id: int) -> Picture | None:
        """An indexed image's file bytes, checked against what was indexed; None for an
        unknown id.

        Raises:
            BadImageError: the file is gone, unreadable or changed since it was indexed.
        """
        from .browse import ok_row
        from .pictures import original

        row = ok_row(self.catalog, image_id)
        return original(row) if row is not None else None

    def thumbnail(self, image_id: int, size: int = 256) -> Picture | None:
        """A JPEG thumbnail of an indexed image (long side `size`, one of
        :data:`.pictures.THUMBNAIL_SIZES`), cached in the bundle; None for an unknown id.

        Raises:
            BadQueryError: a size not offered.
            BadImageError: not cached, and the file is gone, changed or undecodable.
        """
        from .browse import ok_row
        from .pictures import thumbnail

        row = ok_row(self.catalog, image_id)
        return thumbnail(self.path, row, size) if row is not None else None

    def decode_query(self, data: bytes, max_pixels: int | None = None) -> PILImage:
        """An uploaded query image (its bytes, as a network front end receives them) decoded
        as a query file is: upright RGB, reduced early to the size the query needs.

        Args:
            max_pixels: refuse an image declaring more pixels than this, from its header,
                before any decoding (default: the decoder's own limit).

        Raises:
            BadImageError: not an image, corrupt, truncated, or over `max_pixels`.
        """
        from .images.decode import MAX_PIXELS, load_image
        from .images.files import FileBytes, content_digest

        raw = FileBytes(bytes(data), len(data), 0, content_digest(data))
        return load_image(raw, MAX_PIXELS if max_pixels is None else max_pixels, self._queries.draft_size).image
