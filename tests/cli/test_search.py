"""`retrieve query` and `retrieve dupes`, end to end: the real console script, results by
path and by id, filters, tags, duplicate groups and --dedup.

The duplicate and filter checks run on the indexed sample photos with a byte-identical
copy and a resized PNG re-encode added (tests/annhelpers.py's photo template).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from retrieval.cli.app import app

from ..annhelpers import copy_bundle, photo_template

runner = CliRunner()


def test_index_and_query_through_the_real_console_script(tmp_path: Path, sample_dir: Path) -> None:
    bundle = tmp_path / "cli bundle"
    run = subprocess.run([sys.executable, "-m", "retrieval.cli", "index", str(sample_dir / "cup"),
                          str(sample_dir / "chair"), "-i", str(bundle), "--json", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)  # stdout holds JSON only
    assert (report["added"], report["failed"], report["embedded"]) == (10, 0, 10)
    assert report["images_per_second"] > 0

    query = sorted((sample_dir / "cup").iterdir())[0]
    run = subprocess.run([sys.executable, "-m", "retrieval.cli", "query", str(query), "-k", "3",
                          "-i", str(bundle), "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert str(query) not in [r["path"] for r in results]
    assert "timing" in json.loads(run.stdout)


def test_query_table_by_id_and_path(indexed: Path, sample_dir: Path) -> None:
    query = sorted((sample_dir / "starfish").iterdir())[0]
    res = runner.invoke(app, ["query", str(query), "-k", "4", "-i", str(indexed)])
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if "starfish" in line]
    assert len(lines) >= 2 and str(query) not in res.stdout

    as_json = runner.invoke(app, ["query", str(query), "-k", "4", "-i", str(indexed), "--json"])
    own_id_results = json.loads(as_json.stdout)["results"]
    first = own_id_results[0]["id"]
    by_id = runner.invoke(app, ["query", "--id", str(first), "-k", "4", "-i", str(indexed), "--json"])
    assert by_id.exit_code == 0, by_id.output
    assert first not in [r["id"] for r in json.loads(by_id.stdout)["results"]]


# ---------------------------------------------------------------- copies, filters and tags


@pytest.fixture()
def photos(tmp_path_factory: pytest.TempPathFactory, extractor, tmp_path: Path):
    template = photo_template(tmp_path_factory.getbasetemp() / "photo-template", extractor)
    return template, copy_bundle(template, tmp_path / "bundle")


def _cli(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_dupes_lists_identical_and_near_copies(photos) -> None:
    template, bundle = photos
    exact = _cli("dupes", "--exact", "-i", str(bundle), "--json")
    assert [sorted(g["paths"]) for g in exact] == [sorted([str(template.original), str(template.exact_copy)])]
    assert exact[0]["exact"] is True
    near = _cli("dupes", "-i", str(bundle), "--json", "-q")
    groups = [set(g["paths"]) for g in near]
    assert {str(template.original), str(template.exact_copy)} in groups
    assert {str(template.near_source), str(template.near_copy)} in groups
    assert len(groups) == 2, "distinct photos of one class must not be grouped"
    by_near = next(g for g in near if str(template.near_copy) in g["paths"])
    assert not by_near["exact"] and 0.9 <= by_near["score"] < 1.0


def test_query_dedup_folds_copies_and_still_returns_k(photos) -> None:
    """Another photo of the class finds both members of a copy pair; --dedup keeps the
    better-ranked one, lists the other under it, and fills the list to k."""
    template, bundle = photos
    for first, copy in [(template.original, template.exact_copy), (template.near_source, template.near_copy)]:
        query = str(sorted(first.parent.iterdir())[1])
        plain = _cli("query", query, "-k", "6", "-i", str(bundle), "--json")["results"]
        assert {str(first), str(copy)} <= {r["path"] for r in plain}
        folded = _cli("query", query, "-k", "6", "--dedup", "-i", str(bundle), "--json")["results"]
        assert len(folded) == 6
        kept = [r for r in folded if r["path"] in (str(first), str(copy))]
        assert len(kept) == 1 and kept[0]["duplicates"] == [str(copy) if kept[0]["path"] == str(first) else str(first)]


def test_query_filters_and_tags_on_the_command_line(photos) -> None:
    template, bundle = photos
    query = str(template.original)
    cups = template.photos / "cup"

    def results(*options: str) -> list[dict[str, Any]]:
        return _cli("query", query, "-k", "8", "-i", str(bundle), "--json", *options)["results"]

    folder = results("--folder", str(cups))
    assert len(folder) == 5 and all(r["path"].startswith(str(cups) + "/") for r in folder)
    old = results("--until", "2002-01-01")
    assert {r["path"] for r in old} == {str(p) for p in cups.iterdir()}
    assert all(not r["path"].startswith(str(cups)) for r in results("--since", "2002-01-01"))
    png = results("--type", "png")
    assert [r["path"] for r in png] == [str(template.near_copy)]
    tagged = [str(p) for p in sorted((template.photos / "starfish").iterdir())[:3]]
    assert _cli("tag", *tagged, "--add", "sea", "--add", "fav", "-i", str(bundle), "--json") == {"changed": 3}
    _cli("tag", tagged[0], "--remove", "fav", "-i", str(bundle), "--json")
    assert {r["path"] for r in results("--tag", "sea")} == set(tagged)
    assert {r["path"] for r in results("--tag", "sea", "--tag", "fav")} == set(tagged[1:])
    assert {r["path"] for r in results("--path", "*/extra/*")} == {str(template.exact_copy), str(template.near_copy)}
    missing = runner.invoke(app, ["tag", str(template.photos / "nope.jpg"), "--add", "x", "-i", str(bundle)])
    assert missing.exit_code == 2 and "not in the index" in missing.stderr and "Traceback" not in missing.output
