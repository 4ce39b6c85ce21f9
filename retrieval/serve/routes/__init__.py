"""The API's routes, by what they touch: searching, the images, the collection as a whole,
writes, the server itself, the web page and the API's documentation."""

from . import collection, docs, images, page, search, system, writes

__all__ = ["collection", "docs", "images", "page", "search", "system", "writes"]
