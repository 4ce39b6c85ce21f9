"""Parameters several routes take: an image id in the path, filters in the query string."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import HTTPException, Path, Query

from ..schemas import FilterSpec, metadata_pairs

__all__ = ["ImageId", "filter_query"]

ImageId = Annotated[int, Path(ge=1, le=2**63 - 1, description="An indexed image's id.")]


def filter_query(
    path: Annotated[Optional[str], Query(description="Glob on the full path.")] = None,
    folder: Annotated[list[str], Query(description="Below this folder (repeatable: any).")] = [],  # noqa: B006
    type: Annotated[list[str], Query(description="Decoded format (repeatable: any).")] = [],  # noqa: B006
    min_size: Annotated[Optional[int], Query(ge=0)] = None,
    max_size: Annotated[Optional[int], Query(ge=0)] = None,
    since: Annotated[Optional[str], Query(description="Modified on or after (YYYY-MM-DD).")] = None,
    until: Annotated[Optional[str], Query(description="Modified on or before.")] = None,
    tag: Annotated[list[str], Query(description="Has this tag (repeatable: all).")] = [],  # noqa: B006
    meta: Annotated[list[str], Query(description="Metadata KEY=VALUE (repeatable: all).")] = [],  # noqa: B006
) -> FilterSpec:
    """FastAPI dependency: the filter of a GET request, from its query string."""
    try:
        metadata = metadata_pairs(meta)
    except ValueError as e:
        raise HTTPException(422, f"meta: {e}") from None
    return FilterSpec(path=path, folders=folder, types=type, min_size=min_size, max_size=max_size, since=since,
                      until=until, tags=tag, metadata=metadata)
