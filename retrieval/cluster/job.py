"""What a Ray indexing job is asked to do, and the Ray session it runs in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import RetrievalError

__all__ = ["LOCAL", "MAX_RETRIES", "ClusterError", "RayJob", "innermost", "ray_session"]

LOCAL = "local"
"""The address that starts Ray in this process (or joins the one ``RAY_ADDRESS`` names)."""

MAX_RETRIES = 3
"""How often Ray restarts a dead embed actor, and retries the batch it held: bounded, so a
file that kills its worker every time fails the job instead of looping forever."""


class ClusterError(RetrievalError):
    """Ray is missing, unreachable, or the job failed (its completed shards are kept)."""


@dataclass(frozen=True)
class RayJob:
    """How to run the embed phase on Ray.

    Args:
        address: the cluster (``auto``, ``ray://head:10001``, ``host:6379``), or
            :data:`LOCAL` to start Ray here. A Ray already initialised in this process
            is used as it is.
        batch_size: images per decode task and per embedding call; None: the engine's.
        actors: embed actors; None: one per GPU, else one per 4 of half the CPUs.
        embedder: the actor class (:class:`~retrieval.cluster.workers.Embedder` or a
            subclass; tests kill one mid-job); None: the Embedder.
    """

    address: str = LOCAL
    batch_size: int | None = None
    actors: int | None = None
    embedder: type | None = None


def require_ray() -> Any:
    """The ray module, imported now with Ray Data (which brings pyarrow).

    Raises:
        ClusterError: Ray or Ray Data is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (a bare `pip install ray` lacks it)
    except ImportError as e:
        raise ClusterError(f"--ray needs Ray ({e}): pip install 'retrieve[ray]'") from None
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Ray, connected for the job: a Ray this process already runs is used and left
    running; one connected here is shut down after, so no worker outlives the command.

    Raises:
        ClusterError: Ray is not installed, or the cluster cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    local = {"include_dashboard": False} if address == LOCAL else {}
    try:
        ray.init(address=None if address == LOCAL else address, logging_level=logging.WARNING, **local)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ClusterError(f"cannot start or reach Ray at {address}: {str(e).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


_CAUSED = "The above exception was the direct cause"


def innermost(error: BaseException) -> str:
    """The worker's own exception inside a Ray error, in one line. Ray wraps it in layers
    (task error, user-code error) whose messages are advice; the worker's exception itself
    survives only as text, the last line of the first traceback in the task error's."""
    first = str(error).split(_CAUSED)[0].strip().splitlines()
    if _CAUSED in str(error) and first:
        return first[-1].strip()
    while (inner := getattr(error, "cause", None)) is not None and inner is not error:
        error = inner
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
