"""Concurrent searches embedded together: one forward pass for the requests of a moment.

A search request hands its query to :class:`SearchBatcher` and awaits its hits. One task
takes the waiting queries: the first waits up to the batch window for others to join it,
then all of them (up to the batch size) that share their search parameters go to
:meth:`retrieval.Engine.search_many` as one call, on the engine's thread. While that
forward pass runs, new requests queue up and form the next batch, so under load the
batches grow by themselves and an idle server adds no more than the window to a search.

One bad query must not fail the others: a batch that raises is answered again one query
at a time, each request getting its own hits or its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RetrievalError

__all__ = ["SearchBatcher", "SearchParams"]


@dataclass(frozen=True)
class SearchParams:
    """What a batch must share besides its queries (a hashable key for grouping)."""

    k: int = 10
    where: Any = field(default=None, compare=False)  # the Filter; batches group by its key
    where_key: str = ""
    dedup: float | None = None
    rerank: bool | None = None


@dataclass
class _Waiting:
    query: Any
    params: SearchParams
    future: asyncio.Future[list[Any]] = field(repr=False)


SearchMany = Callable[[Sequence[Any], SearchParams], list[list[Any]]]
"""Runs a batch: the queries and their shared parameters -> one hit list per query."""


class SearchBatcher:
    """Gathers concurrent searches into batches; :meth:`start` it inside the event loop."""

    def __init__(self, search_many: SearchMany, run_blocking: Callable[..., Awaitable[Any]], window_s: float,
                 max_batch: int, on_batch: Callable[[int], None] = lambda size: None) -> None:
        self.search_many, self.run_blocking = search_many, run_blocking
        self.window_s, self.max_batch, self.on_batch = window_s, max_batch, on_batch
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def search(self, query: Any, params: SearchParams) -> list[Any]:
        """The hits of one query, answered within a batch."""
        if self._queue is None:
            raise RuntimeError("the batcher was not started")
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(query, params, future))
        return await future

    async def _serve(self) -> None:
        assert self._queue is not None
        while True:
            waiting = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.window_s
            while len(waiting) < self.max_batch:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0 and self._queue.empty():
                    break
                try:
                    waiting.append(self._queue.get_nowait() if left <= 0 else
                                   await asyncio.wait_for(self._queue.get(), left))
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
            for group in _by_params(waiting):
                await self._answer(group)

    async def _answer(self, group: list[_Waiting]) -> None:
        live = [w for w in group if not w.future.done()]  # a client that left cancelled its future
        if not live:
            return
        self.on_batch(len(live))
        try:
            results = await self.run_blocking(self.search_many, [w.query for w in live], live[0].params)
        except RetrievalError as e:
            if len(live) == 1:
                _settle(live[0].future, exception=e)
            else:  # which query was bad? each alone, so the others still get their hits
                for w in live:
                    await self._answer([w])
            return
        except Exception as e:  # a bug: every waiting request gets it (the app answers 500)
            for w in live:
                _settle(w.future, exception=e)
            return
        for w, hits in zip(live, results):
            _settle(w.future, result=hits)


def _by_params(waiting: list[_Waiting]) -> list[list[_Waiting]]:
    groups: dict[SearchParams, list[_Waiting]] = {}
    for w in waiting:
        groups.setdefault(w.params, []).append(w)
    return list(groups.values())


def _settle(future: asyncio.Future[list[Any]], result: list[Any] | None = None,
            exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result or [])
