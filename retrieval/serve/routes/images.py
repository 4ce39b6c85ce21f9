"""The indexed images: a paged listing, one image's facts, its file, its thumbnails.

Images are named by id only, never by a path from the request: the Engine reads the file
the catalog holds for that id and checks it is still what was indexed. Pictures carry an
ETag (the content hash) and Cache-Control, and answer a matching If-None-Match with 304.
"""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from ...browse import MAX_PAGE
from ...errors import BadImageError
from ...pictures import THUMBNAIL_SIZES, Picture
from ..errors import public_message
from ..schemas import FilterSpec, ImageOut, PageOut
from ..service import Service, service
from .params import ImageId, filter_query

__all__ = ["router"]

router = APIRouter(tags=["images"])

_CACHE = "private, max-age=300"  # an id may be re-indexed with new content: revalidate by ETag after 5 min


@router.get("/images", response_model=PageOut, summary="A page of the indexed images")
async def listing(svc: Annotated[Service, Depends(service)], spec: Annotated[FilterSpec, Depends(filter_query)],
                  after: Annotated[int, Query(ge=0, description="List ids above this (the last page's next_after).")]
                  = 0,
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> PageOut:
    return PageOut.of(await run_in_threadpool(svc.engine.browse, spec.to_filter(), after, limit))


@router.get("/images/{image_id}", response_model=ImageOut, summary="What the index knows about an image")
async def image(svc: Annotated[Service, Depends(service)], image_id: ImageId) -> ImageOut:
    info = (await run_in_threadpool(svc.engine.image_infos, [image_id])).get(image_id)
    if info is None:
        raise _not_found(image_id)
    return ImageOut.of(info)


@router.get("/images/{image_id}/file", response_class=Response, summary="The original image file")
async def original(svc: Annotated[Service, Depends(service)], request: Request, image_id: ImageId) -> Response:
    return _picture(request, image_id, await _read(svc.engine.original, image_id))


@router.get("/images/{image_id}/thumbnail", response_class=Response, summary="A JPEG thumbnail, cached")
async def thumbnail(svc: Annotated[Service, Depends(service)], request: Request, image_id: ImageId,
                    size: Annotated[int, Query(description=f"Long side: one of {list(THUMBNAIL_SIZES)}.")] = 256,
                    ) -> Response:
    return _picture(request, image_id, await _read(svc.engine.thumbnail, image_id, size))


async def _read(method: object, *args: object) -> Optional[Picture]:
    try:
        return await run_in_threadpool(method, *args)  # type: ignore[arg-type]
    except BadImageError as e:  # gone, unreadable or changed on disk since it was indexed
        raise HTTPException(404, f"the image file is not available: {public_message(e)}") from None


def _picture(request: Request, image_id: int, picture: Optional[Picture]) -> Response:
    if picture is None:
        raise _not_found(image_id)
    etag = f'"{picture.etag}"'
    headers = {"ETag": etag, "Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"}
    if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(picture.data, media_type=picture.media_type, headers=headers)


def _not_found(image_id: int) -> HTTPException:
    return HTTPException(404, f"no indexed image with id {image_id}")
