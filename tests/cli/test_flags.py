"""One vocabulary of flags across commands: -i/--index-dir is always the index, --backend
always the ANN backend, -k always how many results; sizes read as people write them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer

from retrieval.cli.app import app
from retrieval.cli.common import parse_size

from .conftest import invoke


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf command below `group` (Click objects, as Typer builds them)."""
    subcommands = getattr(group, "commands", None)
    if subcommands:
        for name, command in subcommands.items():
            yield from _commands(command, (*path, name))
    else:
        yield path, group


def _options() -> list[tuple[tuple[str, ...], Any]]:
    """(command path, option) for every option of every command."""
    return [(path, p) for path, command in _commands(typer.main.get_command(app))
            for p in command.params if getattr(p, "param_type_name", "") == "option"]


def test_each_short_and_long_flag_means_one_thing_everywhere() -> None:
    options = _options()
    assert options, "no commands found"
    for path, option in options:
        flags = set(option.opts) | set(option.secondary_opts)
        if "-i" in flags or "--index-dir" in flags:
            assert {"-i", "--index-dir"} <= flags and option.name == "index_dir", (path, option.opts)
        if "-k" in flags:
            assert option.name == "k" and "results" in (option.help or ""), (path, option.opts, option.help)
        assert "--index" not in flags, (path, "the ANN backend is --backend, the bundle --index-dir")
        if option.name == "backend":
            assert option.opts == ["--backend"], path
    names = {(path, o.name) for path, o in options}
    assert (("index",), "backend") in names and (("reindex",), "backend") in names


@pytest.mark.parametrize(("text", "size"), [
    ("50000", 50_000), ("50k", 50_000), ("2M", 2_000_000), ("1.5G", 1_500_000_000), ("300KB", 300_000),
    ("64KiB", 65_536), ("2mib", 2_097_152), ("10 k", 10_000), ("7b", 7), ("1.005k", 1_005),
])
def test_sizes_read_as_people_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "5q", "-1k", "1e3", "5ib", "k"])
def test_what_is_not_a_size_is_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="not a size"):
        parse_size(text)


def test_index_help_states_the_extractor_defaults_a_new_index_gets() -> None:
    from retrieval.cli.indexing import NEW_EXTRACTOR
    from retrieval.extractors.config import ExtractorConfig

    defaults = ExtractorConfig()
    assert NEW_EXTRACTOR == {name: getattr(defaults, name) for name in NEW_EXTRACTOR}
    text = " ".join(invoke("index", "--help").stdout.split())
    for value in NEW_EXTRACTOR.values():
        assert f"default: ({value} for a new index, else its own)" in text
