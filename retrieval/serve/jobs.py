"""Index jobs: `Engine.index` over folders on the server, in the background, with progress.

Jobs run one at a time on the server's writer thread (the bundle has one writer at a
time anyway) through their own Engine on the same bundle, which shares the warm model:
searches go on answering on the reader Engine meanwhile, which catches up from the
catalog's change log before each search, as another process would. A client polls a
job or follows its events (server-sent events) until it is done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from ..errors import RetrievalError

__all__ = ["Job", "Jobs"]

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
_POLL_S = 0.2  # how often an event stream looks for progress
logger = logging.getLogger(__name__)


@dataclass
class Job:
    """One index job's state, as clients see it."""

    id: int
    folders: list[str]
    state: str = QUEUED
    phase: str = ""
    done: int = 0
    total: int = 0
    report: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


IndexRun = Callable[[Sequence[str], Callable[[str, int, int], None]], dict[str, Any]]
"""Runs `Engine.index(folders, progress)` and returns its report as a dict."""


class Jobs:
    """The server's index jobs, run in order on `executor` (one thread)."""

    def __init__(self, executor: Executor, run: IndexRun, public_message: Callable[[Exception], str]) -> None:
        self.executor, self.run, self.public_message = executor, run, public_message
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()

    def start(self, folders: Sequence[str]) -> Job:
        """Queue a job over `folders`; returns a copy of its state, as :meth:`get` does."""
        with self._lock:
            job = Job(len(self._jobs) + 1, list(folders))
            self._jobs[job.id] = job
            queued = _copy(job)
        self.executor.submit(self._run, job)
        return queued

    def get(self, job_id: int) -> Job | None:
        """A copy of the job's state (the writer thread keeps changing the original)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return _copy(job) if job else None

    def all(self) -> list[Job]:
        with self._lock:
            ids = list(self._jobs)
        return [j for j in map(self.get, ids) if j is not None]

    def _update(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)

    def _run(self, job: Job) -> None:
        self._update(job, state=RUNNING)
        try:
            report = self.run(job.folders, lambda phase, done, total: self._update(job, phase=phase, done=done,
                                                                                   total=total))
        except RetrievalError as e:
            self._update(job, state=FAILED, error=self.public_message(e), finished=time.time())
        except Exception:  # a bug: the traceback goes to the server's log, never to clients
            logger.exception("index job %d failed", job.id)
            self._update(job, state=FAILED, error="internal error", finished=time.time())
        else:
            self._update(job, state=DONE, report=report, finished=time.time())

    async def events(self, job_id: int) -> AsyncIterator[str]:
        """Server-sent events: the job's state each time it changes, until it finishes."""
        last = None
        while True:
            job = self.get(job_id)
            if job is None:
                return
            state = job.to_dict()
            if state != last:
                yield f"event: {job.state}\ndata: {json.dumps(state)}\n\n"
                last = state
            if job.state in (DONE, FAILED):
                return
            await asyncio.sleep(_POLL_S)


def _copy(job: Job) -> Job:
    return dataclasses.replace(job, folders=list(job.folders))
