"""How a server runs: what it allows, what it limits, how it batches. Checked on construction."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import RetrievalError
from ..images.decode import MAX_PIXELS

__all__ = ["MIN_TOKEN_LENGTH", "ServeSettings", "ServeSettingsError"]

MIN_TOKEN_LENGTH = 16
"""A shorter token could be guessed over the network; `secrets.token_urlsafe()` gives 43."""


class ServeSettingsError(RetrievalError):
    """A server setting that cannot work (writes without a token, a limit out of range)."""


@dataclass(frozen=True)
class ServeSettings:
    """What a server allows and limits.

    Attributes:
        allow_writes: offer the write endpoints (index jobs, remove, tags, metadata);
            each then needs `token` as a bearer token.
        token: the bearer token of writes.
        index_roots: folders (on the server) below which index jobs may read; a job
            over any other folder is refused, so a token cannot expose the whole disk.
        cors_origins: browser origins allowed to call the API from their pages (none:
            CORS stays off, and only same-origin pages can read responses).
        max_upload_bytes: the largest request body (an uploaded image and its form).
        max_upload_pixels: the most pixels an uploaded image may declare; checked from
            its header, before any decoding.
        batch_window_ms: how long the first waiting search waits for others to join its
            forward pass.
        max_batch: the most searches embedded in one forward pass (1: one at a time).
    """

    allow_writes: bool = False
    token: str | None = None
    index_roots: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    max_upload_bytes: int = 20 * 2**20
    max_upload_pixels: int = 50_000_000
    batch_window_ms: float = 5.0
    max_batch: int = 32

    def __post_init__(self) -> None:
        if self.allow_writes and (not self.token or len(self.token) < MIN_TOKEN_LENGTH):
            raise ServeSettingsError(f"writes need a bearer token of at least {MIN_TOKEN_LENGTH} characters "
                                     "(--token or RETRIEVE_SERVE_TOKEN)")
        if not 1024 <= self.max_upload_bytes <= 512 * 2**20:
            raise ServeSettingsError(f"the upload limit must be from 1 kB to 512 MB, not {self.max_upload_bytes} bytes")
        if not 1 <= self.max_upload_pixels <= MAX_PIXELS:
            raise ServeSettingsError(f"the pixel limit must be from 1 to {MAX_PIXELS:,}, not {self.max_upload_pixels}")
        if not 0 <= self.batch_window_ms <= 1000:
            raise ServeSettingsError(f"the batch window must be from 0 to 1000 ms, not {self.batch_window_ms}")
        if not 1 <= self.max_batch <= 1024:
            raise ServeSettingsError(f"the batch size must be from 1 to 1024, not {self.max_batch}")
        object.__setattr__(self, "index_roots", tuple(os.path.realpath(r) for r in self.index_roots))
