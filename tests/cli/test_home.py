"""Where indexes live: named indexes in the per-user data folder ($RETRIEVE_HOME), paths
as given, the default index found from any folder, and errors that say where they looked."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest

from retrieval.errors import RetrievalError
from retrieval.home import data_home, index_names, index_path, indexes_root

from .conftest import invoke, one_error_line


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data folder, and a current folder elsewhere (the user's cwd is not the data folder)."""
    folder = tmp_path / "home"
    monkeypatch.setenv("RETRIEVE_HOME", str(folder))
    monkeypatch.delenv("RETRIEVE_INDEX_DIR", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    yield folder


def test_names_go_to_the_data_folder_and_paths_stay_paths(home: Path) -> None:
    assert data_home() == home and indexes_root() == home / "indexes"
    assert index_path("photos") == home / "indexes" / "photos"
    assert index_path("./photos") == Path.cwd() / "photos"
    assert index_path("sub/photos") == Path.cwd() / "sub" / "photos"
    assert index_path("~/photos") == Path.home() / "photos"
    assert index_path("/abs/photos") == Path("/abs/photos")
    for bad in ("", "two words", "tab\tname", "-dash-first"):
        with pytest.raises(RetrievalError):
            index_path(bad)


def test_without_retrieve_home_the_platform_data_folder_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETRIEVE_HOME", raising=False)
    assert data_home() == platformdirs.user_data_path("retrieve", appauthor=False)


def test_the_default_index_is_found_from_any_folder(home: Path, sample_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    made = invoke("index", str(sample_dir / "cup"), "--quiet")
    assert made.exit_code == 0, made.output
    assert (home / "indexes" / "default" / "catalog.sqlite").is_file()
    assert not (Path.cwd() / "indexes").exists()  # nothing left in the folder the user was in
    other = tmp_path / "another"
    other.mkdir()
    monkeypatch.chdir(other)
    query = sorted((sample_dir / "cup").iterdir())[0]
    found = invoke("query", str(query), "-k", "1", "--json")
    assert found.exit_code == 0, found.output
    assert Path(json.loads(found.stdout)["results"][0]["path"]).parent == sample_dir / "cup"
    info = json.loads(invoke("info", "--json").stdout)
    assert info["path"] == str(home / "indexes" / "default")


def test_named_indexes_are_listed_with_their_counts(home: Path, sample_dir: Path) -> None:
    assert index_names() == []
    for name in ("pets", "art"):
        made = invoke("index", str(sample_dir / "cup"), "-i", name, "--quiet")
        assert made.exit_code == 0, made.output
    local = invoke("index", str(sample_dir / "cup"), "-i", "./here", "--quiet")
    assert local.exit_code == 0 and (Path.cwd() / "here" / "catalog.sqlite").is_file()
    listed = json.loads(invoke("indexes", "--json").stdout)
    count = len(list((sample_dir / "cup").iterdir()))
    assert listed["data_folder"] == str(home / "indexes")
    assert [(e["name"], e["count"]) for e in listed["indexes"]] == [("art", count), ("pets", count)]
    text = invoke("indexes").stdout.splitlines()
    assert text == ["name\timages\tpath", f"art\t{count}\t{home / 'indexes' / 'art'}",
                    f"pets\t{count}\t{home / 'indexes' / 'pets'}"]


def test_a_missing_index_says_where_it_looked_and_how_to_point_elsewhere(home: Path) -> None:
    line = one_error_line(invoke("info", "-i", "nosuch"))
    squashed = "".join(line.split())
    assert "".join(str(home / "indexes" / "nosuch").split()) in squashed
    assert "--index-dir" in line and "retrieve indexes" in line
    bad = one_error_line(invoke("info", "-i", "two words"))
    assert "not an index name" in bad


def test_retrieve_index_dir_may_name_an_index(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRIEVE_INDEX_DIR", "work")
    line = one_error_line(invoke("info"))
    assert "".join(str(home / "indexes" / "work").split()) in "".join(line.split())
    assert os.environ["RETRIEVE_INDEX_DIR"] == "work"
