"""The API's documentation at /docs: Swagger UI from the swagger-ui-bundle-v2 package,
served by this app (FastAPI's default loads it from a CDN, which an offline machine
cannot reach)."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

__all__ = ["ASSETS", "ASSETS_URL", "router"]

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
ASSETS_URL = "/docs-assets"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="retrieve API",
                               swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS_URL}/swagger-ui.css", swagger_favicon_url="/static/favicon.svg")
