"""`retrieve index DIR --ray` and `--ray-address ADDRESS`: what they ask of the engine, and
a run on the local Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval import Engine
from retrieval.cluster import LOCAL
from retrieval.indexing.run import IndexReport

from .. import badimages
from ..cli.conftest import invoke


@pytest.mark.parametrize(("args", "address"), [
    ((), None), (("--ray",), LOCAL), (("--ray-address", "ray://head:10001"), "ray://head:10001"),
    (("--ray", "--ray-address", "auto"), "auto"),
])
def test_ray_option_names_the_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      args: tuple[str, ...], address: str | None) -> None:
    """--ray alone starts Ray here (or joins RAY_ADDRESS's); --ray-address names the cluster."""
    seen: list[object] = []

    def index(self: Engine, roots: object, progress: object = None, follow_links: bool = False,
              ray: object = None) -> IndexReport:
        seen.append(ray)
        return IndexReport()

    monkeypatch.setattr(Engine, "index", index)
    photos = badimages.copy_photos(tmp_path / "photos", 1)
    invoke("index", str(photos[0].parent), "--index-dir", str(tmp_path / "bundle"), "-q", *args)
    assert seen == [address]


@pytest.mark.usefixtures("local_ray")
def test_index_on_ray(tmp_path: Path) -> None:
    photos = badimages.copy_photos(tmp_path / "photos", 3, "starfish")
    result = invoke("index", str(tmp_path / "photos"), "--index-dir", str(tmp_path / "bundle"),
                    "--device", "cpu", "-q", "--ray")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added 3, updated 0")
    with Engine.open(tmp_path / "bundle") as engine:
        assert sorted(engine.catalog.rows_under([str(tmp_path / "photos")])) == sorted(str(p) for p in photos)
