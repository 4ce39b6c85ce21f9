"""How failures become answers: a status code and a one-line message, never internals.

A :class:`~retrieval.errors.RetrievalError` is the client's doing (4xx) and its message
says what to fix, with any server path in it replaced by ``<path>`` (the bundle's
location or an upload's temporary file are none of a client's business). Anything else
is a bug: 500 with "internal error", the traceback in the server's log only.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import (
    BadImageError, BadMetadataError, BadQueryError, IndexBusyError, ReadOnlyIndexError, RetrievalError,
)

__all__ = ["install_handlers", "public_message", "status_of"]

logger = logging.getLogger(__name__)

_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"`,;()<>]*")  # an absolute path (not the / inside image/jpeg)
_STATUS: tuple[tuple[type[RetrievalError], int], ...] = (
    (BadImageError, 422), (BadQueryError, 422), (BadMetadataError, 422),
    (ReadOnlyIndexError, 409), (IndexBusyError, 503),
)


def public_message(error: Exception) -> str:
    """The error's message as one line, server paths replaced by ``<path>``."""
    return " ".join(_PATH.sub("<path>", str(error)).split())


def status_of(error: RetrievalError) -> int:
    """The HTTP status of a client's error: 422 for bad input, 409 for a read-only index,
    503 for a busy one, 400 otherwise."""
    return next((code for kind, code in _STATUS if isinstance(error, kind)), 400)


def install_handlers(app: FastAPI) -> None:
    """Answer RetrievalErrors with their status and message, and bugs with a bare 500."""

    @app.exception_handler(RetrievalError)
    async def retrieval_error(_request: Request, error: RetrievalError) -> JSONResponse:
        return JSONResponse({"detail": public_message(error)}, status_code=status_of(error))

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        logger.error("internal error answering %s %s", request.method, request.url.path, exc_info=error)
        return JSONResponse({"detail": "internal error"}, status_code=500)
