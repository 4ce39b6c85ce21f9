"""The root options of `retrieve` (retrieval/cli/app.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval.cli.app import app

runner = CliRunner()


@pytest.fixture()
def library_logger() -> Iterator[logging.Logger]:
    """The library's logger, its level restored afterwards (the CLI sets it process-wide)."""
    logger = logging.getLogger("retrieval")
    level = logger.level
    yield logger
    logger.setLevel(level)


@pytest.mark.parametrize(("flag", "level"), [("-v", logging.INFO), ("-vv", logging.DEBUG)])
def test_verbose_sets_the_library_log_level(library_logger: logging.Logger, tmp_path: Path, flag: str,
                                            level: int) -> None:
    res = runner.invoke(app, [flag, "info", "-i", str(tmp_path / "none")])
    assert res.exit_code == 2  # no index there: the root options still took effect
    assert library_logger.level == level
