"""Thread counts for the graph runtimes: the cores this process may use, or RETRIEVE_THREADS."""

from __future__ import annotations

import os

import pytest

from retrieval.runtimes import threads


def test_one_thread_per_available_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRIEVE_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert threads.available_cores() == 3 and threads.intra_op_threads() == 3


@pytest.mark.parametrize(("given", "expected"), [("1", 1), ("6", 6), ("0", 3), ("many", 3), ("", 3)])
def test_environment_overrides_only_with_a_positive_count(given: str, expected: int,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 3)
    monkeypatch.setenv("RETRIEVE_THREADS", given)
    assert threads.intra_op_threads() == expected
