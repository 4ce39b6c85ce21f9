"""Writes, offered only with --allow-writes and each behind the bearer token: index jobs
over folders below the index roots, remove, tags, metadata.

They run on the writer thread through the writing Engine (see :mod:`..service`), after
any index job queued before them; searches keep answering meanwhile.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import StreamingResponse

from ..auth import require_writer
from ..jobs import Job
from ..schemas import IndexJobBody, RemoveBody, TagsBody
from ..service import Service, service
from .params import ImageId

__all__ = ["router"]

router = APIRouter(tags=["writes"], dependencies=[Depends(require_writer)])


@router.post("/jobs/index", status_code=202, summary="Index folders on the server, in the background")
async def start_index(svc: Annotated[Service, Depends(service)], body: IndexJobBody) -> dict[str, Any]:
    return svc.jobs.start(svc.allowed_folders(body.folders)).to_dict()


@router.get("/jobs", summary="Every index job of this server's life")
async def jobs(svc: Annotated[Service, Depends(service)]) -> list[dict[str, Any]]:
    return [j.to_dict() for j in svc.jobs.all()]


@router.get("/jobs/{job_id}", summary="An index job's state and progress (poll)")
async def job(svc: Annotated[Service, Depends(service)], job_id: int) -> dict[str, Any]:
    return _job(svc, job_id).to_dict()


@router.get("/jobs/{job_id}/events", summary="An index job's progress as server-sent events")
async def job_events(svc: Annotated[Service, Depends(service)], job_id: int) -> StreamingResponse:
    _job(svc, job_id)
    return StreamingResponse(svc.jobs.events(job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


@router.post("/images/remove", summary="Remove images from the index (the files stay)")
async def remove(svc: Annotated[Service, Depends(service)], body: RemoveBody) -> dict[str, int]:
    return {"removed": await svc.on_writer(lambda: svc.writer.remove(body.ids))}


@router.post("/images/{image_id}/tags", summary="Add and remove tags")
async def tags(svc: Annotated[Service, Depends(service)], image_id: ImageId, body: TagsBody) -> dict[str, int]:
    return {"changed": await svc.on_writer(lambda: svc.writer.tag([image_id], body.add, body.remove))}


@router.put("/images/{image_id}/metadata", summary="Replace an image's metadata")
async def metadata(svc: Annotated[Service, Depends(service)], image_id: ImageId,
                   body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    await svc.on_writer(lambda: svc.writer.set_metadata(image_id, body))
    return {"id": image_id, "metadata": body}


def _job(svc: Service, job_id: int) -> Job:
    found = svc.jobs.get(job_id)
    if found is None:
        raise HTTPException(404, f"no index job {job_id}")
    return found
