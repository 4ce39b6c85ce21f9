"""What every route shares: the reader Engine, the settings, the threads, the batcher,
the index jobs and the metrics.

Threads: the Engine is not made to be called from several threads at once (its ANN
cache catches up in place), so everything that searches runs on one engine thread, in
order; the batcher makes that one thread enough. Catalog-only reads (listing, pictures)
run on Starlette's thread pool, beside it: the catalog opens a session per read. Writes
run on one writer thread through a second Engine on the same bundle (see :mod:`.jobs`).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import HTTPException, Request

from .batching import SearchBatcher, SearchParams
from .errors import public_message
from .jobs import Jobs
from .metrics import Metrics
from .settings import ServeSettings

if TYPE_CHECKING:
    from ..engine import Engine
    from ..query import Hit

__all__ = ["Service", "service"]

T = TypeVar("T")


class Service:
    """The server's state, made by :func:`retrieval.serve.create_app`."""

    def __init__(self, engine: Engine, settings: ServeSettings) -> None:
        self.engine, self.settings = engine, settings
        self.metrics = Metrics()
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="retrieve-engine")
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="retrieve-writer")
        self.batcher = SearchBatcher(self._search_many, self.on_engine, settings.batch_window_ms / 1000,
                                     settings.max_batch, self.metrics.observe_batch)
        self.jobs = Jobs(self._writer_thread, self._index, public_message)
        self._writer: Engine | None = None

    # ------------------------------------------------------------------ threads

    async def on_engine(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the engine thread."""
        return await asyncio.get_running_loop().run_in_executor(self._engine_thread, functools.partial(fn, *args))

    async def on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the writer thread, after any index job queued before it."""
        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, functools.partial(fn, *args))

    async def start(self) -> None:
        """Load the model and the ANN index now, so the first search is not the slow one."""
        await self.on_engine(lambda: (self.engine.extractor, self.engine.ann))
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self._writer_thread.shutdown(wait=True)
        self._engine_thread.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()

    # ------------------------------------------------------------------ searching

    async def search(self, query: Any, params: SearchParams) -> list[Hit]:
        """One query's hits, embedded in a batch with the searches of the same moment."""
        return await self.batcher.search(query, params)

    def _search_many(self, queries: Sequence[Any], params: SearchParams) -> list[list[Hit]]:
        return self.engine.search_many(queries, params.k, params.where, params.dedup, params.rerank)

    # ------------------------------------------------------------------ writing

    @property
    def writer(self) -> Engine:
        """The Engine that writes, on the writer thread only; opened on first use with the
        reader's warm model."""
        if self._writer is None:
            from ..engine import Engine

            self._writer = Engine.open(self.engine.path, options=self.engine.options, extractor=self.engine.extractor)
        return self._writer

    def _index(self, folders: Sequence[str], progress: Callable[[str, int, int], None]) -> dict[str, Any]:
        return self.writer.index(folders, progress).to_dict()

    def allowed_folders(self, folders: Sequence[str]) -> list[str]:
        """The folders of an index job, if each lies in an index root.

        Raises:
            HTTPException: 403 for a folder outside every root.
        """
        roots = self.settings.index_roots
        if not roots:
            raise HTTPException(403, "index jobs are off: start the server with --index-root DIR")
        out = []
        for n, folder in enumerate(folders, 1):
            real = os.path.realpath(folder)
            if not os.path.isabs(folder) or not any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots):
                raise HTTPException(403, f"folder {n} is not an absolute path below an index root")
            out.append(real)
        return out


def service(request: Request) -> Service:
    """FastAPI dependency: the app's Service."""
    return request.app.state.service
