"""How many threads a runtime gets: the cores this process may use.

Measured on a 2-core machine (see scripts/bench_runtime.py and the README): the model is
compute-bound, so one intra-op thread per available core is fastest, and threads beyond
the cores only add contention. Cores, not ``os.cpu_count()``: a container or ``taskset``
may allow fewer than the machine has.
"""

from __future__ import annotations

import os

__all__ = ["available_cores", "intra_op_threads"]


def available_cores() -> int:
    """The cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return max(1, len(affinity(0)) if affinity else os.cpu_count() or 1)


def intra_op_threads() -> int:
    """Threads for one graph's operators: ``RETRIEVE_THREADS`` when set, else one per
    available core."""
    given = os.environ.get("RETRIEVE_THREADS", "").strip()
    return int(given) if given.isdigit() and int(given) > 0 else available_cores()
