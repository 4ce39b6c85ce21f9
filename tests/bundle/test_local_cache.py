"""LocalCache over a real catalog: built from the stored features, caught up from the
change log, rebuilt when its file is damaged or made for other settings, and never
stopped by a damaged catalog row.

The features are synthetic (random RootSIFT-like descriptors, no OpenCV needed): an
image queried with its own features has the same words, so it is the unique top hit
whatever vocabulary was trained, which lets a caught-up index and a fresh rebuild be
compared image by image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.bundle import LocalCache, read_bundle_file, save_atomic
from retrieval.catalog import Catalog
from retrieval.errors import RetrievalError
from retrieval.local import LocalFeatures, LocalIndex
from retrieval.local.features import DESCRIPTOR_SCALE

from ..catalog.helpers import record

N = 20
FEATURES = 60
DIGEST = "weights-digest"
# 20 images x 60 features = 1,200 descriptors: enough to train at train_min 500
SETTINGS: dict[str, Any] = {"extractor": "sift", "params": {"max_features": FEATURES},
                            "index": {"train_min": 500, "words": 32}}


def features(seed: int) -> LocalFeatures:
    """Random unit descriptors, quantised as RootSIFT's are, at random points of a 100 px image."""
    rng = np.random.default_rng(seed)
    d = rng.random((FEATURES, 128)) ** 4
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    points = rng.uniform(0, 99, (FEATURES, 2))
    keypoints = np.column_stack([points, np.full(FEATURES, 4.0), np.zeros(FEATURES)]).astype(np.float32)
    return LocalFeatures(keypoints, np.round(d * DESCRIPTOR_SCALE).astype(np.uint8), 100, 100)


@pytest.fixture()
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    """A catalog of N images with local features (seeds 1..N), ids as the catalog gives them."""
    opened = Catalog(tmp_path / "catalog.sqlite", create=True)
    opened.apply([record(n, local=features(n).to_bytes()) for n in range(1, N + 1)])
    yield opened
    opened.close()


def cache(catalog: Catalog, name: str = "local.index", settings: dict[str, Any] | None = None,
          digest: str = DIGEST) -> LocalCache:
    return LocalCache(catalog.path.parent / name, catalog, digest, SETTINGS if settings is None else settings)


def stored(catalog: Catalog) -> dict[int, LocalFeatures]:
    return {i: LocalFeatures.from_bytes(b) for block in catalog.iter_local_features() for i, b in block}


def top(index: LocalIndex, query: LocalFeatures) -> int:
    return index.search(query, 1)[0][0]


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_built_from_the_catalog_saved_and_loaded_back(catalog: Catalog) -> None:
    first = cache(catalog)
    index = first.sync()
    assert first.rebuilt_unsaved and index.trained and index.ntotal == N
    images = stored(catalog)
    assert all(top(index, f) == i for i, f in images.items())
    first.save()

    second = cache(catalog)
    loaded = second.sync()
    assert not second.rebuilt_unsaved and second.generation == catalog.generation()
    assert all(loaded.search(f, 5) == index.search(f, 5) for f in images.values())


def test_a_saved_index_caught_up_answers_as_a_fresh_rebuild(catalog: Catalog) -> None:
    writer = cache(catalog)
    writer.save()
    ids = sorted(stored(catalog))
    removed = ids[:3]
    new_content = features(99)
    catalog.apply([record(n, local=features(n).to_bytes()) for n in range(N + 1, N + 6)], removals=removed)
    catalog.apply([record(5, id=ids[4], content_hash="edited", local=new_content.to_bytes()),
                   record(6, id=ids[5], content_hash="no features now")])

    reader = cache(catalog)
    caught_up = reader.sync()
    assert not reader.rebuilt_unsaved  # loaded from the file, then caught up
    fresh = cache(catalog, name="fresh.index").sync()
    images = stored(catalog)
    assert len(images) == N - 3 - 1 + 5
    assert caught_up.ntotal == fresh.ntotal == len(images)
    for image_id in range(1, max(images) + 1):
        assert (image_id in caught_up) == (image_id in fresh) == (image_id in images)
    for image_id, f in images.items():
        assert top(caught_up, f) == top(fresh, f) == image_id
    assert top(caught_up, new_content) == ids[4]


def test_an_untrained_index_catches_up_and_trains_when_the_writer_compacts(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite", create=True)
    try:
        settings = {**SETTINGS, "index": {"train_min": 10 * FEATURES, "words": 16}}
        catalog.apply([record(n, local=features(n).to_bytes()) for n in range(1, 6)])
        writer = cache(catalog, settings=settings)
        assert not writer.sync().trained
        assert writer.sync().search(features(1), 3) == []
        catalog.apply([record(n, local=features(n).to_bytes()) for n in range(6, 11)])
        index = writer.sync()
        assert index.ntotal == 10 and index.needs_rebuild() and index.search(features(1), 3) == []
        writer.persist()
        reader = cache(catalog, settings=settings)
        trained = reader.sync()
        assert not reader.rebuilt_unsaved and trained.trained and not trained.needs_rebuild()
        assert top(trained, features(7)) == 7
    finally:
        catalog.close()


def _flip_payload(raw: bytes) -> bytes:
    middle = raw.index(b"\n") + 1 + (len(raw) - raw.index(b"\n")) // 2
    return raw[:middle] + bytes([raw[middle] ^ 0x10]) + raw[middle + 1:]


@pytest.mark.parametrize("damage", ["flipped byte", "crafted payload"])
def test_a_damaged_file_is_discarded_with_a_warning_and_rebuilt_identically(
        catalog: Catalog, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    first = cache(catalog)
    first.save()
    original = first.sync().to_bytes()
    if damage == "flipped byte":
        first.file.write_bytes(_flip_payload(first.file.read_bytes()))
    else:  # a valid checksum over a payload that does not hold together
        saved = read_bundle_file(first.file)
        assert saved is not None
        header = {k: v for k, v in saved[0].items() if k != "sha256"}
        save_atomic(first.file, header, saved[1][: len(saved[1]) - 100])

    second = cache(catalog)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        rebuilt = second.sync()
    assert len(_warnings(caplog, "discarding the local-feature index")) == 1
    assert second.rebuilt_unsaved
    assert rebuilt.to_bytes() == original  # seeded: the same collection gives the same index


@pytest.mark.parametrize("change", ["extractor params", "index options", "digest"])
def test_a_file_made_for_other_settings_is_rebuilt_under_the_new_ones(catalog: Catalog, change: str) -> None:
    cache(catalog).save()
    settings, digest = SETTINGS, DIGEST
    if change == "extractor params":
        settings = {**SETTINGS, "params": {"max_features": 30}}
    elif change == "index options":
        settings = {**SETTINGS, "index": {"train_min": 500, "words": 16}}
    else:
        digest = "other weights"
    other = cache(catalog, settings=settings, digest=digest)
    index = other.sync()
    assert other.rebuilt_unsaved
    assert index.vocabulary is not None
    assert index.vocabulary.size == (16 if change == "index options" else 32)


def test_settings_spelled_with_tuples_still_match_their_saved_json(catalog: Catalog) -> None:
    settings = {**SETTINGS, "params": {"max_features": FEATURES, "scales": (1.0, 0.5)}}
    cache(catalog, settings=settings).save()
    again = cache(catalog, settings=settings)
    again.sync()
    assert not again.rebuilt_unsaved


def test_a_damaged_catalog_row_is_skipped_with_one_warning(catalog: Catalog, caplog: pytest.LogCaptureFixture) -> None:
    (bad,) = catalog.apply([record(N + 1, local=b"not features")])
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        first = cache(catalog)
        index = first.sync()  # reads the catalog twice
    assert index.ntotal == N and bad not in index
    assert len(_warnings(caplog, f"image {bad} are damaged")) == 1
    first.save()

    truncated = features(N + 2).to_bytes()[:-1]
    (worse,) = catalog.apply([record(N + 2, local=truncated)])
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        caught_up = cache(catalog).sync()
    assert len(_warnings(caplog, f"image {worse} are damaged")) == 1
    assert caught_up.ntotal == N and worse not in caught_up


def test_bad_settings_are_retrieval_errors(catalog: Catalog) -> None:
    for settings, message in (({"params": {1, 2}}, "must be JSON"), ({"params": float("nan")}, "must be JSON"),
                              ({"index": [1]}, "must map"), ({"index": {"words": 0}}, "parameter words"),
                              ({"index": {"nlist": 4}}, "unknown local-index option")):
        with pytest.raises(RetrievalError, match=message):
            cache(catalog, settings=settings)
