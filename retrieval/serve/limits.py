"""The request body limit, enforced before anything parses a body.

A declared Content-Length over the limit is refused at once (413) without reading a byte;
a body sent without one (chunked) is counted as it arrives and refused as soon as it
passes the limit, so neither the multipart parser nor the image decoder ever sees more.
The pixel limit is the image decoder's own, checked from the image header
(:meth:`retrieval.Engine.decode_query`).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FORM_OVERHEAD", "BodyLimit"]

FORM_OVERHEAD = 64 * 1024
"""Room for the multipart boundaries and form fields around an uploaded file."""


class BodyLimit:
    """ASGI middleware: no request body may exceed `limit` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # raised into the parser; FastAPI passes HTTPException on
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"the request body is over the limit of {self.limit:,} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)
