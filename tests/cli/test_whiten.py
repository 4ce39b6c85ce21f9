"""`retrieve reindex --whiten/--no-whiten [--whiten-dim D]` as a user meets it: what it
says, what `info` shows after, and one clear error line for a bad request."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import invoke, one_error_line


def test_whiten_then_info_then_no_whiten(small_bundle: Path) -> None:
    result = invoke("reindex", "--whiten", "--whiten-dim", "6", "-i", str(small_bundle))
    assert result.exit_code == 0, result.output
    assert "whitened to 6 dimensions (learned from 10 images)" in result.stdout
    info = invoke("info", "-i", str(small_bundle))
    assert "whitened to 6-d (learned from 10 images)" in info.stdout
    facts = json.loads(invoke("info", "-i", str(small_bundle), "--json").stdout)
    assert facts["index"]["whitening"]["dim"] == 6 and "data" not in facts["index"]["whitening"]
    cup = sorted((small_bundle.parent / "photos" / "cup").iterdir())[0]
    hits = json.loads(invoke("query", str(cup), "-i", str(small_bundle), "--json", "-k", "3").stdout)["results"]
    assert len(hits) == 3 and all(-1.0 <= h["score"] <= 1.0 for h in hits)
    back = invoke("reindex", "--no-whiten", "-i", str(small_bundle), "--json")
    assert back.exit_code == 0 and "whitening" not in json.loads(back.stdout)
    assert "whitened" not in invoke("info", "-i", str(small_bundle)).stdout


def test_bad_whitening_requests_are_one_line_errors(small_bundle: Path) -> None:
    assert "--whiten-dim goes with --whiten" in one_error_line(
        invoke("reindex", "--whiten-dim", "4", "-i", str(small_bundle)))
    assert "--whiten-dim must be from 1 to" in one_error_line(
        invoke("reindex", "--whiten", "--whiten-dim", "100000", "-i", str(small_bundle)))
