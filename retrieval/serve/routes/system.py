"""The server itself: health, what it serves, metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from ..service import Service, service

__all__ = ["router"]

router = APIRouter(tags=["server"])


@router.get("/health", summary="Liveness: the server answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/info", summary="The index: count, extractor, backend, writes allowed")
async def info(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    facts = await svc.on_engine(svc.engine.info)
    facts.pop("path")  # where the bundle lives on the server is not a client's business
    return {**facts, "writes": svc.settings.allow_writes, "max_upload_bytes": svc.settings.max_upload_bytes,
            "max_upload_pixels": svc.settings.max_upload_pixels}


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics (text format)")
async def metrics(svc: Annotated[Service, Depends(service)]) -> PlainTextResponse:
    count = await svc.on_engine(len, svc.engine)
    text = svc.metrics.render({"retrieve_index_images": ("Images in the index.", count)})
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
