"""The FastAPI application over one Engine: :func:`create_app`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import routes
from .errors import install_handlers
from .limits import FORM_OVERHEAD, BodyLimit
from .metrics import RequestMetrics
from .service import Service
from .settings import ServeSettings

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["create_app"]


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The API over `engine` (which the caller opened, and closes after the app stops).

    The model and ANN index load when the app starts (its lifespan), not on the first
    search. The web page is at ``/``, the API's documentation at ``/docs``. CORS is off unless `settings.cors_origins` names origins; write routes answer
    403 unless `settings.allow_writes`, and then need the bearer token.
    """
    settings = settings or ServeSettings()
    svc = Service(engine, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        try:
            yield
        finally:
            await svc.stop()

    app = FastAPI(title="retrieve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Content-based image retrieval over one index: search by image, id or vector, "
                              "similar, recommend, browse, thumbnails; index jobs when writes are allowed.")
    app.state.service = svc
    install_handlers(app)
    for router in (routes.search.router, routes.images.router, routes.collection.router, routes.writes.router,
                   routes.system.router, routes.page.router, routes.docs.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=routes.page.STATIC), name="static")
    app.mount(routes.docs.ASSETS_URL, StaticFiles(directory=routes.docs.ASSETS), name="docs-assets")
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD)
    app.add_middleware(RequestMetrics, metrics=svc.metrics)
    return app
