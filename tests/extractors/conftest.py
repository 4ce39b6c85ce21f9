"""Nothing in the extractor tests touches the network: every torch hub download raises,
as it would offline (tests that check for attempts ask for `no_network` by name)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def offline(no_network: list[str]) -> list[str]:
    return no_network
