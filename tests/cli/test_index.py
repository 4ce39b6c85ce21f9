"""`retrieve index`, `remove` and `reindex`: what they change in a bundle, and the
extractor an existing index insists on (pooling, weights, checkpoints)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrieval import Engine, ExtractorMismatchError
from retrieval.cli.app import app
from retrieval.options import EngineOptions

from .. import badimages as bi
from ..annhelpers import Synthetic
from ..badimages import sample_image
from .conftest import one_error_line

runner = CliRunner()


def _squash(text: str) -> str:
    """Text with all whitespace removed, to compare paths across console line folds."""
    return "".join(text.split())


def test_a_removed_image_stays_out_until_its_exclusion_is_undone(indexed: Path, sample_dir: Path) -> None:
    """`retrieve remove` takes an image out of the index, not off the disk, for good: neither
    `reindex` (a rebuild from the stored vectors) nor the next `retrieve index` of its
    folder brings it back (issue 14: "the next retrieve index adds the removed files
    back"). `remove --undo` does; the image is then embedded again under a new id (ids are
    never reused: a removed id must stay gone for readers that saw its removal)."""
    victim, sibling = sorted((sample_dir / "dolphin").iterdir())[:2]

    def neighbours() -> dict[str, int]:
        """path -> id of every image but the sibling (an indexed query leaves itself out)."""
        res = runner.invoke(app, ["query", str(sibling), "-k", "100", "-i", str(indexed), "--json"])
        assert res.exit_code == 0, res.output
        return {r["path"]: r["id"] for r in json.loads(res.stdout)["results"]}

    def count() -> int:
        return json.loads(runner.invoke(app, ["info", "-i", str(indexed), "--json"]).stdout)["count"]

    def index() -> dict:
        res = runner.invoke(app, ["index", str(sample_dir), "-i", str(indexed), "--json", "-q", "--workers", "0",
                                  "--device", "cpu"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    before = neighbours()
    assert len(before) == count() - 1 and str(victim) in before
    res = runner.invoke(app, ["remove", str(victim), "-i", str(indexed), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"removed": 1, "excluded": [str(victim)], "restored": []}
    assert count() == len(before) and str(victim) not in neighbours()

    res = runner.invoke(app, ["reindex", "-i", str(indexed), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["count"] == len(before)
    assert str(victim) not in neighbours(), "reindex reads no file: the removed image stays out"

    report = index()
    assert (report["added"], report["embedded"], report["excluded"]) == (0, 0, 1)
    assert str(victim) not in neighbours() and count() == len(before), "the removal sticks"

    res = runner.invoke(app, ["remove", "--undo", str(victim), "-i", str(indexed), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["restored"] == [str(victim)]
    report = index()
    assert (report["added"], report["embedded"], report["unchanged"]) == (1, 1, len(before))  # all the others
    after = neighbours()
    assert set(after) == set(before) and count() == len(before) + 1
    assert after[str(victim)] > max(before.values()), "the re-added image must get a new id"


def test_reindex_switches_the_backend_and_index_keeps_it(indexed: Path, sample_dir: Path) -> None:
    res = runner.invoke(app, ["reindex", "--backend", "hnsw", "--param", "M=12", "-i", str(indexed), "--json"])
    assert res.exit_code == 0, res.output
    described = json.loads(res.stdout)
    assert (described["type"], described["effective"], described["params"]["M"]) == ("hnsw", "hnsw", 12)
    res = runner.invoke(app, ["index", str(sample_dir), "-i", str(indexed), "--backend", "flat", "-q"])
    assert res.exit_code == 2 and "reindex --backend" in res.stderr  # an existing index is switched by reindex
    res = runner.invoke(app, ["index", str(sample_dir), "-i", str(indexed), "-q", "--json", "--workers", "0"])
    assert res.exit_code == 0 and json.loads(res.stdout)["unchanged"] == 50
    assert json.loads(runner.invoke(app, ["info", "-i", str(indexed), "--json"]).stdout)["index"]["type"] == "hnsw"


def test_reindex_and_info_on_the_command_line(synthetic_2000: Synthetic) -> None:
    path = str(synthetic_2000.engine.path)
    synthetic_2000.engine.close()
    result = runner.invoke(app, ["reindex", "--backend", "hnsw", "--param", "M=12", "--param", "ef_search=40",
                                 "-i", path, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"] == {"M": 12, "ef_construction": 80, "ef_search": 40}
    info = runner.invoke(app, ["info", "-i", path])
    assert "ann index   hnsw, M=12, ef_construction=80, ef_search=40" in info.stdout
    bad = runner.invoke(app, ["reindex", "--backend", "hnsw", "--param", "nlist=12", "-i", path])
    assert bad.exit_code == 2 and "has no parameter 'nlist'" in bad.stderr
    assert "Traceback" not in bad.output


def test_cli_index_reports_bad_files_and_goes_on(tiny_bundle: Path, bad_dir: Path, tmp_path: Path) -> None:
    """The one CLI case that embeds: the CLI builds its own model (a few seconds)."""
    new = tmp_path / "new"
    new.mkdir()
    shutil.copyfile(bi.sample_photos(3)[2], new / "good.jpg")
    for kind in ("corrupt", "zero_byte", "bomb_header"):
        shutil.copyfile(bi.undecodable(bad_dir, kind), new / bi.UNDECODABLE[kind][0])
    os.symlink("nowhere.jpg", new / "broken.jpg")
    bad = {str(new / bi.UNDECODABLE[k][0]) for k in ("corrupt", "zero_byte", "bomb_header")}
    bad.add(str(new / "broken.jpg"))

    res = runner.invoke(app, ["index", str(new), "-i", str(tiny_bundle), "--json", "-q", "--workers", "0",
                              "--device", "cpu"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "Traceback" not in res.output
    report = json.loads(res.stdout)  # stdout is the JSON report only
    assert (report["added"], report["failed"]) == (1, len(bad))
    assert {f["path"] for f in report["failures"]} == bad
    squashed = _squash(res.stderr)
    for path in bad:
        assert _squash(f"skipped {path}:") in squashed, res.stderr

    info = json.loads(runner.invoke(app, ["info", "-i", str(tiny_bundle), "--json"]).stdout)
    assert info["count"] == len(bi.sample_photos(2)) + 1 and info["failed_count"] == len(bad)


# ---------------------------------------------------------------- the extractor of an existing index


@pytest.mark.usefixtures("no_network")
def test_cli_index_with_other_pooling_is_an_error(make_engine, tmp_path: Path) -> None:
    engine = make_engine()
    engine.close()
    photos = tmp_path / "empty-photos"
    photos.mkdir()
    res = runner.invoke(app, ["index", str(photos), "-i", str(engine.path), "--pooling", "avg", "-q"])
    assert res.exit_code == 2, (res.output, res.exception)
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.startswith("error:"), res.stderr
    squashed = " ".join(res.stderr.split())  # a long message could fold across lines
    assert "pooling" in squashed and "'avg'" in squashed and "'gem'" in squashed
    ok = runner.invoke(app, ["index", str(photos), "-i", str(engine.path), "--pooling", "gem", "-q", "--json"])
    assert ok.exit_code == 0, (ok.output, ok.exception)
    assert json.loads(ok.stdout)["embedded"] == 0


def test_cli_index_uses_weights_given_for_an_existing_index(resnet18_bundle, tmp_path: Path) -> None:
    bundle, old, new = resnet18_bundle
    photos = tmp_path / "photos"
    photos.mkdir()
    sample_image("cup", "image_0001.jpg").save(photos / "cup.jpg")
    res = runner.invoke(app, ["index", str(photos), "-i", str(bundle), "--weights", str(new),
                                   "--device", "cpu", "--workers", "0", "-q", "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["embedded"] == 1


@pytest.mark.usefixtures("one_thread")
def test_index_with_a_checkpoint_then_query_and_refuse_another(triplet_checkpoints: tuple[Path, Path],
                                                               tmp_path: Path, sample_dir: Path) -> None:
    a, b = triplet_checkpoints
    bundle = tmp_path / "bundle"
    folders = [str(sample_dir / "cup"), str(sample_dir / "chair")]
    res = runner.invoke(app, ["index", *folders, "-i", str(bundle), "--extractor", str(a), "--json", "-q",
                              "--device", "cpu", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 10
    info = json.loads(runner.invoke(app, ["info", "-i", str(bundle), "--json"]).stdout)
    assert (info["extractor"]["kind"], info["dim"]) == ("triplet", 64)

    query = str(sorted((sample_dir / "cup").glob("*.jpg"))[0])
    res = runner.invoke(app, ["query", query, "-i", str(bundle), "-k", "3", "--json"])  # re-opens with the manifest
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["results"]) == 3

    for cmd in (["query", query], ["index", *folders]):
        res = runner.invoke(app, [*cmd, "-i", str(bundle), "--extractor", str(b), "--device", "cpu"])
        assert res.exit_code == 2, res.output
        assert "differs from the one this index was built with" in one_error_line(res)
    with pytest.raises(ExtractorMismatchError):
        Engine.create(bundle, b, exist_ok=True, options=EngineOptions(device="cpu"))
    with Engine.create(bundle, a, exist_ok=True, options=EngineOptions(device="cpu", workers=0)) as engine:  # the same one: fine
        assert len(engine) == 10
