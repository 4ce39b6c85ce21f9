"""Searching: by an uploaded image, by an indexed id or a vector, similar, recommend.

Searches by image, id or vector go through the batcher (one forward pass for the uploads
of a moment); similar and recommend need no model and run on the engine thread directly.
"""

from __future__ import annotations

import time
from typing import Annotated, Optional

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ...errors import BadImageError
from ...query import MAX_K
from ..batching import SearchParams
from ..errors import public_message
from ..schemas import FilterSpec, RecommendBody, SearchBody, SearchOut, hits_out
from ..service import Service, service
from .params import ImageId, filter_query

__all__ = ["router"]

router = APIRouter(tags=["search"])


def _params(k: int, spec: FilterSpec | None, dedup: float | None, rerank: bool | None) -> SearchParams:
    spec = spec or FilterSpec()
    return SearchParams(k, spec.to_filter(), spec.key(), dedup, rerank)


@router.post("/search/image", response_model=SearchOut, summary="Search with an uploaded image")
async def search_image(
    svc: Annotated[Service, Depends(service)],
    image: Annotated[UploadFile, File(description="The query image (JPEG, PNG, WebP ...).")],
    k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
    filter: Annotated[Optional[str], Form(description="A filter as JSON (see FilterSpec).")] = None,
    dedup: Annotated[Optional[float], Form(ge=-1.0, le=1.0)] = None,
    rerank: Annotated[Optional[bool], Form()] = None,
) -> SearchOut:
    start = time.perf_counter()
    try:
        spec = FilterSpec.model_validate_json(filter) if filter else None
    except ValidationError as e:
        raise HTTPException(422, f"filter: {e.errors()[0]['msg']}") from None
    data = await image.read(svc.settings.max_upload_bytes + 1)
    if len(data) > svc.settings.max_upload_bytes:
        raise HTTPException(413, f"the image is over the limit of {svc.settings.max_upload_bytes:,} bytes")
    try:
        query = await run_in_threadpool(svc.engine.decode_query, data, svc.settings.max_upload_pixels)
    except BadImageError as e:
        raise HTTPException(415, f"not an image this server can read: {public_message(e)}") from None
    hits = await svc.search(query, _params(k, spec, dedup, rerank))
    return hits_out(hits, time.perf_counter() - start)


@router.post("/search", response_model=SearchOut, summary="Search with an indexed image's id or a vector")
async def search(svc: Annotated[Service, Depends(service)], body: SearchBody) -> SearchOut:
    start = time.perf_counter()
    query = body.id if body.id is not None else np.asarray(body.vector, np.float32)
    hits = await svc.search(query, _params(body.k, body.filter, body.dedup, body.rerank))
    return hits_out(hits, time.perf_counter() - start)


@router.get("/images/{image_id}/similar", response_model=SearchOut, summary="More like an indexed image")
async def similar(svc: Annotated[Service, Depends(service)], image_id: ImageId,
                  spec: Annotated[FilterSpec, Depends(filter_query)],
                  k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> SearchOut:
    start = time.perf_counter()
    hits = await svc.on_engine(svc.engine.similar, image_id, k, spec.to_filter())
    return hits_out(hits, time.perf_counter() - start)


@router.post("/recommend", response_model=SearchOut, summary="Like these, unlike those")
async def recommend(svc: Annotated[Service, Depends(service)], body: RecommendBody) -> SearchOut:
    start = time.perf_counter()
    where = body.filter.to_filter() if body.filter else None
    hits = await svc.on_engine(svc.engine.recommend, body.liked, body.disliked, body.k, where, body.negative_weight)
    return hits_out(hits, time.perf_counter() - start)
