"""Metadata is plain, finite JSON with filterable keys, or it is refused before any write.

Before, ``set_metadata(id, {"a": nan})`` was stored, and from then on every filtered
query failed with "malformed JSON".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval.catalog import Catalog
from retrieval.errors import BadMetadataError
from retrieval.filters import Filter

from .helpers import record


class _Thing:
    pass


BAD_VALUES = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": -float("inf"),
    "nested nan": {"x": [1.0, float("nan")]},
    "set": {1, 2},
    "bytes": b"raw",
    "object": _Thing(),
    "numpy int": np.int64(3),
    "non-string nested key": {"x": {1: "one"}},
}
BAD_KEYS = ["a.b", 'say"hi', "a[0]", "$", "", "with space", "ünï", 7, None]


@pytest.fixture()
def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog(tmp_path / "c.sqlite", create=True)
    yield catalog
    catalog.close()


def _still_filterable(catalog: Catalog, image_id: int) -> None:
    """The stored metadata is unchanged and every filter kind still runs."""
    assert catalog.rows_by_id([image_id])[image_id].meta == {"price": 3, "tags": ["red"]}
    assert list(catalog.ids_matching(Filter(metadata={"price": 3}, tags=("red",)).conditions())) == [image_id]


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_set_metadata_refuses_what_json_cannot_hold(catalog: Catalog, value: Any) -> None:
    [image_id] = catalog.apply([record(1, metadata={"price": 3, "tags": ["red"]})])
    with pytest.raises(BadMetadataError, match=r"metadata\['a'\]"):
        catalog.set_metadata(image_id, {"a": value})
    _still_filterable(catalog, image_id)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_set_metadata_refuses_keys_filters_cannot_name(catalog: Catalog, key: Any) -> None:
    [image_id] = catalog.apply([record(1, metadata={"price": 3, "tags": ["red"]})])
    with pytest.raises(BadMetadataError, match="letters, digits, _ and - only"):
        catalog.set_metadata(image_id, {key: 1})
    _still_filterable(catalog, image_id)


@pytest.mark.parametrize("tags", ["red", ["red", 3], {"red": 1}])
def test_tags_in_metadata_are_a_list_of_strings(catalog: Catalog, tags: Any) -> None:
    [image_id] = catalog.apply([record(1, metadata={"price": 3, "tags": ["red"]})])
    with pytest.raises(BadMetadataError, match="list of strings"):
        catalog.set_metadata(image_id, {"tags": tags})
    _still_filterable(catalog, image_id)


@pytest.mark.parametrize("tag", [3, "", None, ("a", "b")])
def test_update_tags_refuses_what_is_not_a_tag(catalog: Catalog, tag: Any) -> None:
    [image_id] = catalog.apply([record(1, metadata={"price": 3, "tags": ["red"]})])
    with pytest.raises(BadMetadataError, match="non-empty string"):
        catalog.update_tags([image_id], add=["blue", tag], remove=[])
    _still_filterable(catalog, image_id)


def test_indexing_with_bad_metadata_writes_nothing(catalog: Catalog) -> None:
    [image_id] = catalog.apply([record(1, metadata={"price": 3, "tags": ["red"]})])
    with pytest.raises(BadMetadataError, match="NaN"):
        catalog.apply([record(2, metadata={"ok": 1}), record(3, metadata={"score": float("nan")})])
    assert catalog.generation() == 1
    assert catalog.counts()["ok"] == 1
    _still_filterable(catalog, image_id)


def test_good_metadata_is_stored_as_json_reads_it_back(catalog: Catalog) -> None:
    meta = {"sku": "ü-1", "price": 9.5, "n": 2, "on_sale": True, "note": None,
            "sizes": ("S", "M"), "dims": {"w": 1, "h-mm": [2, 3.5]}, "tags": ["a", "b"]}
    [image_id] = catalog.apply([record(1, metadata=meta)])
    stored = catalog.rows_by_id([image_id])[image_id].meta
    assert stored == {**meta, "sizes": ["S", "M"]}
    conditions = Filter(metadata={"sku": "ü-1", "on_sale": True}, tags=("b",)).conditions()
    assert list(catalog.ids_matching(conditions)) == [image_id]
