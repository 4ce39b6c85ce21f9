"""What `retrieve query` gives besides its table: --paths for pipes, a contact sheet
(--sheet, --open), the whole command's time, and the option clashes refused up front."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import webbrowser
from pathlib import Path

import pytest

from ..htmlpage import Page
from .conftest import invoke, one_error_line


def _results(bundle: Path, *query: str, k: int = 4) -> list[dict]:
    res = invoke("query", *query, "-k", str(k), "-i", str(bundle), "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["results"]


def test_paths_prints_one_path_a_line_and_nothing_else(small_bundle: Path, sample_dir: Path) -> None:
    query = str(sorted((sample_dir / "cup").iterdir())[0])
    res = invoke("query", query, "-k", "4", "-i", str(small_bundle), "--paths")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [r["path"] for r in _results(small_bundle, query)]
    assert res.stdout.endswith("\n") and "model load" in res.stderr  # the timing stays on stderr


def test_sheet_shows_the_query_and_each_result_and_open_opens_it(small_bundle: Path, sample_dir: Path,
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **kw: opened.append(url) or True)
    query = str(sorted((sample_dir / "cup").iterdir())[0])
    out = tmp_path / "sheet.html"
    res = invoke("query", query, "-k", "4", "-i", str(small_bundle), "--sheet", str(out), "--open")
    assert res.exit_code == 0, res.output
    assert opened == [out.resolve().as_uri()]
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    results = _results(small_bundle, query)
    assert len(page.sources) == 1 + len(results)  # the query, then each result
    assert all(src.startswith("data:image/jpeg;base64,") for src in page.sources)
    shown = [t for t in page.text if t.startswith("/")]
    assert shown == [query] + [r["path"] for r in results]
    for rank, r in enumerate(results, 1):
        assert f"{rank}. score {r['score']:.4f}, id {r['id']}" in page.text
    assert res.stdout.count("\n") == 1 + len(results)  # the table is still printed


def test_a_sheet_by_id_names_the_query_image(small_bundle: Path, tmp_path: Path) -> None:
    first = _results(small_bundle, "--id", "1")[0]
    out = tmp_path / "sheet.jpg"
    res = invoke("query", "--id", str(first["id"]), "-k", "2", "-i", str(small_bundle), "--sheet", str(out), "--json")
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, whatever else is printed
    assert json.loads(res.stdout)["results"]  # --json output unchanged


@pytest.mark.parametrize(("args", "named"), [
    (["--sheet", "out.png"], "'out.png'"),
    (["--sheet", "out.jpg", "-k", "5000"], "do not fit in a JPEG sheet"),  # taller than a JPEG can be
    (["--open"], "--open"),
    (["--json", "--paths"], "--paths"),
    (["--null", "--paths"], "--paths"),
    ([], "IMAGE"),
])
def test_clashing_or_missing_options_fail_before_the_index_is_opened(args: list[str], named: str,
                                                                     tmp_path: Path) -> None:
    query = ["--id", "1"] if args else []
    line = one_error_line(invoke("query", *query, *args, "-i", str(tmp_path / "no index")))
    assert named in line and "no index" not in line


def test_the_timing_line_gives_the_whole_commands_time(small_bundle: Path, sample_dir: Path) -> None:
    query = str(sorted((sample_dir / "cup").iterdir())[0])
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "retrieval.cli", "query", query, "-k", "2", "-i", str(small_bundle),
                          "--paths"], capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    assert run.returncode == 0, run.stderr
    match = re.fullmatch(r"model load ([\d.]+) s, query ([\d.]+) ms, total ([\d.]+) s\n", run.stderr)
    assert match is not None, run.stderr
    load, query_s, total = float(match[1]), float(match[2]) / 1000, float(match[3])
    # the interpreter's start and the imports count too: more than load and query, never more than the run
    assert load + query_s < total <= wall
    assert total > 0.5 * wall  # not only the command function's own time


def test_sizes_are_read_as_people_write_them(small_bundle: Path) -> None:
    everything = {r["path"] for r in _results(small_bundle, "--id", "1", k=20)}
    sizes = {p: Path(p).stat().st_size for p in everything}
    cut = sorted(sizes.values())[len(sizes) // 2]  # half the files are at least this large
    kept = {r["path"] for r in _results(small_bundle, "--id", "1", "--min-size", f"{cut / 1000}k", k=20)}
    assert kept == {p for p, size in sizes.items() if size >= cut} and 0 < len(kept) < len(everything)
    assert "'5q' is not a size" in one_error_line(invoke("query", "--id", "1", "--min-size", "5q",
                                                         "-i", str(small_bundle)))
