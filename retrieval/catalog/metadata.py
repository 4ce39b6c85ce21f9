"""What user metadata may hold: plain, finite JSON whose top-level keys filters can name.

The catalog stores metadata as JSON text and filters read it with SQLite's JSON
functions. A value ``json.dumps`` writes but SQLite cannot parse (NaN, Infinity) makes
*every* later filtered query fail with "malformed JSON", long after the write that
caused it; a key like ``a.b`` or ``x"]`` can never be named in a filter's JSON path. So
metadata is checked before it is written, and refused with a message that says what to
change, instead of being accepted and breaking the index later.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import BadMetadataError

__all__ = ["KEY_PATTERN", "TAGS_KEY", "check_metadata", "check_tags", "dumps"]

# A top-level key a filter can address as ``$.key`` without any quoting.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
TAGS_KEY = "tags"  # the key :meth:`Catalog.update_tags` keeps as a sorted list of strings
_SCALARS = (str, bool, int, type(None))


def dumps(value: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities (SQLite's JSON cannot parse them)."""
    return json.dumps(value, allow_nan=False)


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-clean copy of `metadata` (plain dicts, lists and scalars), or BadMetadataError.

    Raises:
        BadMetadataError: not a mapping; a top-level key outside letters, digits, ``_``
            and ``-``; a non-string key anywhere; a value JSON cannot hold (set, bytes,
            objects, NaN, infinity); or a "tags" entry that is not a list of strings.
    """
    if not isinstance(metadata, Mapping):
        raise BadMetadataError(f"metadata must be a dict of key -> value, not a {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise BadMetadataError(
                f"metadata key {key!r} cannot be used in filters: name keys with letters, digits, _ and - only"
            )
    clean = _clean(metadata, "metadata")
    tags = clean.get(TAGS_KEY, [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadMetadataError(f"metadata[{TAGS_KEY!r}] must be a list of strings (the image's tags)")
    return clean


def check_tags(tags: Iterable[Any]) -> list[str]:
    """The tags as a list, or BadMetadataError if one is not a non-empty string."""
    tags = list(tags)
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise BadMetadataError(f"tag {tag!r}: a tag must be a non-empty string")
    return tags


def _clean(value: Any, where: str) -> Any:
    """A plain copy of one value, or BadMetadataError naming the first part JSON cannot hold.

    Copying (rather than passing the caller's objects through) also turns tuples and
    other sequences' subclasses into the lists and dicts that a read gives back.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadMetadataError(f"{where} is {value}: JSON has no NaN or infinity; store null or a finite number")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadMetadataError(f"{where} has key {key!r}: JSON object keys must be strings")
            out[str(key)] = _clean(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_clean(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, _SCALARS):
        return value
    raise BadMetadataError(
        f"{where} is a {type(value).__name__}, which JSON cannot store; use a string, number, bool, None, list or dict"
    )
