"""`retrieve query --batch`: a folder, a list file or stdin of queries, one answer each as a
JSON line or CSV rows; a bad query gets an error entry and the others go on."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from retrieval.cli.app import app
from retrieval.cli.batch import Answer, answer_all
from retrieval.errors import BadImageError

from .. import badimages
from .conftest import copy_as, invoke, one_error_line, runner


def _single(bundle: Path, query: str) -> list[tuple[int, float]]:
    """What `retrieve query` answers for one query alone: (id, score) of each hit."""
    args = ["--id", query] if query.isdigit() else [query]
    res = invoke("query", *args, "-k", "3", "-i", str(bundle), "--json")
    assert res.exit_code == 0, res.output
    return [(r["id"], r["score"]) for r in json.loads(res.stdout)["results"]]


def _assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """The same hits, in the same order, with the same scores (to rounding)."""
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)


@pytest.fixture()
def queries(sample_dir: Path, tmp_path: Path) -> Path:
    """A folder of three sample photos and, second in name order, a corrupt one."""
    folder = tmp_path / "queries"
    copy_as(sorted((sample_dir / "cup").iterdir())[0], folder, "a.jpg")
    badimages.write_corrupt(folder / "b.jpg")
    copy_as(sorted((sample_dir / "chair").iterdir())[0], folder, "c.jpg")
    copy_as(sorted((sample_dir / "chair").iterdir())[1], folder, "d.jpg")
    return folder


def test_a_folder_gives_one_json_line_per_query_and_a_bad_one_an_error(small_bundle: Path, queries: Path) -> None:
    res = invoke("query", "--batch", str(queries), "-k", "3", "-i", str(small_bundle))
    assert res.exit_code == 2, res.output  # one failed: the run says so at the end
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["query"] for line in lines] == [str(queries / n) for n in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    assert "results" not in lines[1] and "b.jpg" in lines[1]["error"]
    for line in lines[:1] + lines[2:]:
        _assert_same([(r["id"], r["score"]) for r in line["results"]], _single(small_bundle, line["query"]))
    assert "4 queries (1 failed)" in res.stderr


def test_a_list_of_paths_and_ids_from_stdin_as_csv(small_bundle: Path, sample_dir: Path) -> None:
    photo = str(sorted((sample_dir / "chair").iterdir())[2])
    res = runner.invoke(app, ["query", "--batch", "-", "--format", "csv", "-k", "3", "-i", str(small_bundle)],
                        input=f"{photo}\n\n2\n")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert list(rows[0]) == ["query", "rank", "id", "score", "path", "error"]
    for query in (photo, "2"):
        mine = [r for r in rows if r["query"] == query]
        assert [int(r["rank"]) for r in mine] == [1, 2, 3] and not any(r["error"] for r in mine)
        _assert_same([(int(r["id"]), float(r["score"])) for r in mine], _single(small_bundle, query))
    assert {r["query"] for r in rows} == {photo, "2"}  # the blank line is no query


def test_a_list_file_with_an_unknown_id_and_a_missing_file(small_bundle: Path, tmp_path: Path) -> None:
    listing = tmp_path / "queries.txt"
    listing.write_text("1\n999\n/gone/photo.jpg\n3\n")
    res = invoke("query", "--batch", str(listing), "--json", "-k", "2", "-i", str(small_bundle), "-q")
    assert res.exit_code == 2, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [line["query"] for line in lines] == [1, 999, "/gone/photo.jpg", 3]
    assert "999" in lines[1]["error"] and "/gone/photo.jpg" in lines[2]["error"]
    assert [len(line["results"]) for line in (lines[0], lines[3])] == [2, 2]


@pytest.mark.parametrize(("batch", "extra", "named"), [
    ("photo.jpg", [], "retrieve query IMAGE"),  # an image is one query, not a list
    ("missing.txt", [], "missing.txt"),
    ("empty.txt", [], "no query"),
    ("list.txt", ["--id", "1"], "not both"),
    ("list.txt", ["--format", "xml"], "'xml'"),
    ("list.txt", ["--paths"], "--paths"),
    ("list.txt", ["--sheet", "s.html"], "--sheet"),
    ("list.txt", ["--json", "--format", "csv"], "--json"),
])
def test_a_wrong_batch_is_one_error_before_the_index_is_opened(batch: str, extra: list[str], named: str,
                                                               tmp_path: Path, sample_dir: Path) -> None:
    copy_as(sorted((sample_dir / "cup").iterdir())[0], tmp_path, "photo.jpg")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "list.txt").write_text("1\n")
    line = one_error_line(invoke("query", "--batch", str(tmp_path / batch), *extra, "-i", str(tmp_path / "none")))
    assert named in line and "no index" not in line


def test_format_without_batch_is_refused(small_bundle: Path) -> None:
    assert "--format" in one_error_line(invoke("query", "--id", "1", "--format", "csv", "-i", str(small_bundle)))


def test_a_chunk_with_a_bad_query_is_split_until_it_stands_alone() -> None:
    calls: list[list[int | str]] = []

    def search(part: list[int | str]) -> list[list]:
        calls.append(part)
        if "bad" in part:
            raise BadImageError("query image bad: not an image")
        return [[q] for q in part]

    queries: list[int | str] = [1, 2, 3, 4, 5, "bad", 7, 8, 9]
    progress: list[tuple[str, int, int]] = []
    answers = list(answer_all(search, queries, chunk=8, progress=lambda *p: progress.append(p)))
    assert answers[5] == Answer("bad", None, "query image bad: not an image")
    assert [a.hits for a in answers[:5] + answers[6:]] == [[q] for q in queries if q != "bad"]
    assert len(calls) <= 1 + 2 * 3 + 1  # the bad chunk of 8 halved 3 times, not 8 single searches, then the last
    assert progress == [("queries", 8, 9), ("queries", 9, 9)]
