"""Query assembly and argument checks (retrieval/query.py) through the Engine.

Every bad argument is a BadQueryError (a RetrievalError and a ValueError) that says what
was wrong; none returns [] or arbitrary hits, and none raises AttributeError/TypeError.
A query image that cannot be decoded is a BadImageError, and the engine goes on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval import BadQueryError, Engine, Filter, RetrievalError
from retrieval.errors import BadImageError
from retrieval.query import MAX_K, check_k

from . import badimages as bi


@pytest.fixture()
def engine(make_engine, sample_dir: Path) -> Engine:
    engine = make_engine()
    engine.index([sample_dir / "cup", sample_dir / "chair", sample_dir / "laptop"])
    return engine


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 1_000_000_000, 2.5, True, "10", None])
def test_k_must_be_a_positive_integer_up_to_the_maximum(engine: Engine, k: object) -> None:
    with pytest.raises(BadQueryError, match="k must be an integer from 1"):
        engine.search(engine.vectors([1])[0], k=k)  # type: ignore[arg-type]
    with pytest.raises(BadQueryError):
        engine.similar(1, k=k)  # type: ignore[arg-type]
    with pytest.raises(BadQueryError):
        engine.recommend([1], k=k)  # type: ignore[arg-type]


def test_k_at_the_bounds_is_accepted(engine: Engine) -> None:
    assert check_k(1) == 1 and check_k(MAX_K) == MAX_K and check_k(np.int64(5)) == 5
    assert len(engine.search(engine.vectors([1])[0], k=MAX_K)) == len(engine)


@pytest.mark.parametrize("vector, complaint", [
    (np.full(1280, np.nan, np.float32), "NaN or infinite"),
    (np.r_[np.ones(1279, np.float32), np.inf], "NaN or infinite"),
    (np.zeros(1280, np.float32), "is zero"),
    (np.ones(512, np.float32), "dimension 512"),
    (np.ones(0, np.float32), "dimension 0"),
])
def test_unsearchable_vectors_are_refused(engine: Engine, vector: np.ndarray, complaint: str) -> None:
    with pytest.raises(BadQueryError, match=complaint):
        engine.search(vector, k=3)


@pytest.mark.parametrize("query, complaint", [
    (None, "cannot search with a NoneType"), (3.5, "cannot search with a float"), ([], "empty query"),
    ({"path": "x.jpg"}, "cannot search with a dict"), (True, "cannot search with a bool"),
    (b"bytes", "cannot search with a bytes"),
])
def test_queries_of_unsupported_types_are_refused(engine: Engine, query: object, complaint: str) -> None:
    with pytest.raises(BadQueryError, match=complaint):
        engine.search(query, k=3)  # type: ignore[arg-type]


def test_a_folder_is_not_a_query_image(engine: Engine, sample_dir: Path) -> None:
    with pytest.raises(BadQueryError, match="is a folder"):
        engine.search(sample_dir / "cup", k=3)


def test_ids_in_a_query_are_indexed_images_left_out_of_the_results(engine: Engine) -> None:
    hits = engine.search([1], k=5)
    assert len(hits) == 5 and 1 not in {h.id for h in hits}
    assert [h.id for h in hits] == [h.id for h in engine.similar(1, k=5)]
    with pytest.raises(BadQueryError, match="no indexed image with id 9999"):
        engine.search([1, 9999], k=5)


def test_recommend_refuses_likes_cancelled_by_dislikes(engine: Engine) -> None:
    with pytest.raises(BadQueryError, match="minus the disliked"):
        engine.recommend([2], negative_ids=[2], negative_weight=1.0)
    with pytest.raises(BadQueryError, match="at least one liked"):
        engine.recommend([])
    with pytest.raises(BadQueryError, match="negative_weight"):
        engine.recommend([2], negative_ids=[3], negative_weight=float("nan"))
    with pytest.raises(BadQueryError, match="ids are integers"):
        engine.recommend(["2"])  # type: ignore[list-item]
    assert len(engine.recommend([2], negative_ids=[3], k=4)) == 4


def test_an_empty_filter_is_no_filter(engine: Engine) -> None:
    assert not Filter() and not Filter(metadata={}) and Filter(tags=("a",))
    q = engine.vectors([1])[0]
    unfiltered = [h.id for h in engine.search(q, k=10)]
    assert [h.id for h in engine.search(q, k=10, where=Filter())] == unfiltered
    assert [h.id for h in engine.search(q, k=10, where={})] == unfiltered


def test_bad_dedup_threshold_is_refused(engine: Engine) -> None:
    with pytest.raises(BadQueryError, match="dedup"):
        engine.search([1], k=3, dedup=2.0)


def test_every_query_error_is_a_retrieval_error_and_a_value_error() -> None:
    assert issubclass(BadQueryError, RetrievalError) and issubclass(BadQueryError, ValueError)


def test_a_search_reads_the_catalog_in_one_transaction(engine: Engine, sample_dir: Path) -> None:
    """Catch-up, indexed-path lookup, filter, candidate vectors, rows and the dedup fold all
    read one snapshot: one BEGIN per search (release 0.1 opened four to six)."""
    from sqlalchemy import event

    begins: list[int] = []
    event.listen(engine.catalog.engine, "begin", lambda conn: begins.append(1))
    cup = sorted((sample_dir / "cup").iterdir())[0]
    for search in (lambda: engine.search(cup, k=5, where={"x": 1}, dedup=0.95),
                   lambda: engine.search([1, 2], k=3), lambda: engine.similar(3, k=4),
                   lambda: engine.recommend([1], negative_ids=[4], k=4)):
        begins.clear()
        search()
        assert len(begins) == 1


def test_bad_query_image_raises_bad_image_error_and_the_engine_keeps_working(make_engine, tmp_path: Path,
                                                                             bad_dir: Path) -> None:
    root = tmp_path / "photos"
    bi.copy_photos(root, 3)
    engine = make_engine()
    engine.index([root])
    good = root / bi.sample_photos(1)[0].name
    for kind in ("corrupt", "truncated_jpeg", "bomb_header"):
        with pytest.raises(BadImageError, match=bi.UNDECODABLE[kind][2]):
            engine.search(bi.undecodable(bad_dir, kind))
        with pytest.raises(BadImageError):  # one bad image spoils a combined query
            engine.search([good, bi.undecodable(bad_dir, kind)])
    assert len(engine.search(good, k=5)) == 2


def test_local_features_are_extracted_beside_the_embedding() -> None:
    """Asked for, a one-image query's local features come with it, extracted in another
    thread while the network embeds; not asked for, or for several images, none are."""
    import threading

    from PIL import Image

    from retrieval.query import QueryBuilder

    threads: dict[str, list[str]] = {"embed": [], "local": []}

    def embed(images: list[Image.Image]) -> np.ndarray:
        threads["embed"].append(threading.current_thread().name)
        return np.ones((len(images), 4), np.float32)

    def extract(image: Image.Image) -> tuple[str, tuple[int, int]]:
        threads["local"].append(threading.current_thread().name)
        return ("features", image.size)

    builder = QueryBuilder(None, 4, 64, embed, 0, extract)  # type: ignore[arg-type]  # images need no catalog
    one, other = Image.new("RGB", (30, 20)), Image.new("RGB", (10, 40))
    assert builder.build(one, local=True).local == ("features", (30, 20))
    assert threads["local"][0].startswith("query-local-features") and threads["local"][0] != threads["embed"][0]
    assert builder.build(one).local is None and builder.build([one, other], local=True).local is None
    assert [b.local for b in builder.build_many([one, other], local=True)] == [("features", (30, 20)),
                                                                               ("features", (10, 40))]
    assert len(threads["embed"]) == 4  # one forward pass per build, the batch included
