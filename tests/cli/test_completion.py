"""Shell completion: `retrieve --show-completion SHELL` prints the script a shell sources,
and the script's protocol completes commands and options from the live command tree."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from retrieval.cli.app import app

runner = CliRunner()


def test_show_completion_prints_a_script_that_calls_retrieve_back() -> None:
    result = runner.invoke(app, ["--show-completion", "bash"], prog_name="retrieve")
    assert result.exit_code == 0, result.output
    assert "complete " in result.stdout and "_RETRIEVE_COMPLETE=complete_bash" in result.stdout


@pytest.mark.parametrize(("words", "expected"), [
    ("retrieve export-v", "export-vectors"),
    ("retrieve dupes --ke", "--keep"),
    ("retrieve train triplet --keep-r", "--keep-resume"),
])
def test_the_shell_protocol_completes_commands_and_options(words: str, expected: str) -> None:
    env = {"_RETRIEVE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    result = runner.invoke(app, [], prog_name="retrieve", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [expected]
