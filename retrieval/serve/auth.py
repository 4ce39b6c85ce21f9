"""Who may write: nobody on a read-only server, else the holder of the bearer token.

The token is compared in constant time (:func:`hmac.compare_digest` on bytes), so the
time a refusal takes says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from .settings import ServeSettings

__all__ = ["require_writer"]


def require_writer(request: Request) -> None:
    """FastAPI dependency of every write endpoint: 403 when writes are off, 401 without
    the right ``Authorization: Bearer <token>``."""
    settings: ServeSettings = request.app.state.service.settings
    if not settings.allow_writes or settings.token is None:
        raise HTTPException(403, "this server is read-only (start it with --allow-writes and a token)")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
        raise HTTPException(401, "a valid bearer token is needed to write", headers={"WWW-Authenticate": "Bearer"})
