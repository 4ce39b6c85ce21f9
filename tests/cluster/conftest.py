"""One local Ray for the tests of this folder (2 CPUs, no dashboard), shut down after
the folder's last test so no Ray process outlives it into later tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="package")
def local_ray() -> Iterator[Any]:
    """Ray started once for tests/cluster; the code under test finds it running and uses it."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
