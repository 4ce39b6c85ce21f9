"""The collection as a whole: its duplicate groups and its map."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from ...duplicates import DEFAULT_THRESHOLD
from ...projection import MAX_POINTS
from ..schemas import ImageOut
from ..service import Service, service

__all__ = ["router"]

router = APIRouter(tags=["collection"])


class GroupOut(BaseModel):
    exact: bool
    score: float
    images: list[ImageOut]


class DuplicatesOut(BaseModel):
    groups: list[GroupOut]


class PointOut(BaseModel):
    id: int
    x: float
    y: float


class MapOut(BaseModel):
    points: list[PointOut]
    total: int


@router.get("/duplicates", response_model=DuplicatesOut, summary="Groups of identical and near-identical images")
async def duplicates(svc: Annotated[Service, Depends(service)],
                     threshold: Annotated[float, Query(ge=0.5, le=1.0)] = DEFAULT_THRESHOLD,
                     exact: Annotated[bool, Query(description="Identical files only.")] = False) -> DuplicatesOut:
    groups = await svc.on_engine(svc.engine.duplicates, None if exact else threshold)
    infos = await svc.on_engine(svc.engine.image_infos, [i for g in groups for i in g.ids])
    return DuplicatesOut(groups=[GroupOut(exact=g.exact, score=round(g.score, 6),
                                          images=[ImageOut.of(infos[i]) for i in g.ids if i in infos])
                                 for g in groups])


@router.get("/map", response_model=MapOut, summary="Every image placed in 2-D by its vector (PCA)")
async def collection_map(svc: Annotated[Service, Depends(service)],
                         limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 5000) -> MapOut:
    placed = await svc.on_engine(svc.engine.map, limit)
    return MapOut(points=[PointOut(id=int(i), x=round(float(x), 5), y=round(float(y), 5))
                          for i, (x, y) in zip(placed.ids, placed.xy)], total=placed.total)
