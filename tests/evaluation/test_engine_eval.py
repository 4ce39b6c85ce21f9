"""Embedding query files for `retrieve eval`: the shared batch loop, as the Engine embeds."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from retrieval.evaluation.engine_eval import embed_files

from ..badimages import sample_photos, write_corrupt


def test_embed_files_keeps_positions_and_names_each_failure(extractor, tmp_path: Path) -> None:
    good = [str(p) for p in sample_photos(3)]
    corrupt = str(write_corrupt(tmp_path / "corrupt.jpg"))
    paths = [good[0], str(tmp_path / "gone.jpg"), good[1], corrupt, good[2]]
    progress: list[tuple[str, int, int]] = []
    vectors, ok, failed = embed_files(extractor, paths, batch_size=2, workers=0,
                                      progress=lambda *a: progress.append(a))
    assert ok == [0, 2, 4] and vectors.shape == (3, extractor.dim)
    plain = extractor.embed_images([Image.open(p).convert("RGB") for p in good])  # full-scale decoding
    assert (vectors * plain).sum(1).min() > 0.98
    assert [p for p, _ in failed] == [paths[1], corrupt]
    assert "not found" in failed[0][1] and "not a recognised image format" in failed[1][1]
    assert progress[-1] == ("queries", 5, 5)
