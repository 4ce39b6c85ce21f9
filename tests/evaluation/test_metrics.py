"""retrieval.evaluation against an independent, naive implementation.

The reference ranks each query's whole gallery with a full argsort in float64 and
computes AP by the textbook definition (the mean, over the relevant items, of the
precision at the rank of each), with no blocks and no shortcuts.
"""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.evaluation.metrics import RetrievalScores, average_precision, evaluate

KS = (1, 3, 5, 10, 50)


def _naive_ap(ranked_labels: list[object], label: object, n_relevant: int) -> float:
    """Textbook AP: sum over relevant ranks r of precision@r, divided by #relevant."""
    total, hits = 0.0, 0
    for rank, lab in enumerate(ranked_labels, start=1):
        if lab == label:
            hits += 1
            total += hits / rank
    return total / n_relevant


def _naive_evaluate(queries, query_labels, gallery, gallery_labels, ks, query_ids=None, gallery_ids=None):
    """(map, {k: P@k}, {k: R@k}, #queries) by brute force, one query at a time."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    aps, p_at, r_at = [], {k: [] for k in ks}, {k: [] for k in ks}
    for i in range(len(q)):
        keep = [j for j in range(len(g))
                if not (query_ids is not None and gallery_ids is not None and gallery_ids[j] == query_ids[i])]
        scores = np.array([float(q[i] @ g[j]) for j in keep])
        order = np.argsort(-scores)  # full sort of the whole gallery
        ranked = [gallery_labels[keep[o]] for o in order]
        n_rel = sum(1 for lab in ranked if lab == query_labels[i])
        if n_rel == 0:
            continue
        aps.append(_naive_ap(ranked, query_labels[i], n_rel))
        for k in ks:
            hits = sum(1 for lab in ranked[:k] if lab == query_labels[i])
            p_at[k].append(hits / k)
            r_at[k].append(hits / n_rel)
    mean = lambda xs: float(np.mean(xs)) if xs else 0.0  # noqa: E731
    return mean(aps), {k: mean(v) for k, v in p_at.items()}, {k: mean(v) for k, v in r_at.items()}, len(aps)


def _data(seed: int, n: int, dim: int = 16, classes: int = 5, names: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, classes, n)
    if names:
        return x, [f"class-{c}" for c in labels]
    return x, labels.tolist()


def _assert_matches(got: RetrievalScores, expected: tuple) -> None:
    mean_ap, p_at, r_at, count = expected
    assert got.queries == count
    assert got.map == pytest.approx(mean_ap, abs=1e-9)
    assert set(got.precision_at) == set(p_at) and set(got.recall_at) == set(r_at)
    for k in p_at:
        assert got.precision_at[k] == pytest.approx(p_at[k], abs=1e-9), f"P@{k}"
        assert got.recall_at[k] == pytest.approx(r_at[k], abs=1e-9), f"R@{k}"


@pytest.mark.parametrize("block", [1, 7, 64, 256])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_matches_naive(seed: int, block: int) -> None:
    """Every gallery item is also a query, with the same id: it must not find itself."""
    x, labels = _data(seed, 120, classes=6, names=seed % 2 == 1)
    ids = list(range(1000, 1120))
    got = evaluate(x, labels, x, labels, ks=KS, query_ids=ids, gallery_ids=ids, block=block)
    _assert_matches(got, _naive_evaluate(x, labels, x, labels, KS, ids, ids))
    assert got.queries == 120


def test_leave_one_out_partial_overlap_and_shuffled_ids() -> None:
    """Only some queries are in the gallery, with ids in an unrelated order."""
    rng = np.random.default_rng(10)
    gallery, g_labels = _data(11, 90, classes=4)
    g_ids = rng.permutation(np.arange(5000, 5090)).tolist()
    extra, e_labels = _data(12, 30, classes=4)
    picked = rng.choice(90, size=40, replace=False)
    queries = np.concatenate([gallery[picked], extra])
    q_labels = [g_labels[p] for p in picked] + e_labels
    q_ids = [g_ids[p] for p in picked] + list(range(9000, 9030))  # the extras are not in the gallery
    for block in (3, 16, 1000):
        got = evaluate(queries, q_labels, gallery, g_labels, ks=KS, query_ids=q_ids, gallery_ids=g_ids, block=block)
        _assert_matches(got, _naive_evaluate(queries, q_labels, gallery, g_labels, KS, q_ids, g_ids))


@pytest.mark.parametrize("block", [1, 5, 32, 500])
@pytest.mark.parametrize("seed", [3, 4])
def test_separate_queries_and_gallery_matches_naive(seed: int, block: int) -> None:
    queries, q_labels = _data(seed, 45, classes=5)
    gallery, g_labels = _data(seed + 100, 150, classes=5)
    got = evaluate(queries, q_labels, gallery, g_labels, ks=KS, block=block)
    _assert_matches(got, _naive_evaluate(queries, q_labels, gallery, g_labels, KS))
    # ids that do not overlap change nothing
    got_ids = evaluate(queries, q_labels, gallery, g_labels, ks=KS, block=block,
                       query_ids=list(range(45)), gallery_ids=list(range(100, 250)))
    assert got_ids == got


def test_queries_without_relevant_items_are_skipped() -> None:
    gallery, g_labels = _data(20, 60, classes=3)  # labels 0, 1, 2
    queries, _ = _data(21, 10)
    q_labels = [0, 1, 2, 7, 7, 0, 9, 1, 2, 8]  # 7, 8, 9 never occur in the gallery
    got = evaluate(queries, q_labels, gallery, g_labels, ks=KS, block=4)
    expected = _naive_evaluate(queries, q_labels, gallery, g_labels, KS)
    assert expected[3] == 6
    _assert_matches(got, expected)

    # leave-one-out: an image alone in its class has nothing to find
    x, labels = _data(22, 30, classes=3)
    labels[5] = "singleton"
    ids = list(range(30))
    got = evaluate(x, labels, x, labels, ks=KS, query_ids=ids, gallery_ids=ids, block=8)
    assert got.queries == 29
    _assert_matches(got, _naive_evaluate(x, labels, x, labels, KS, ids, ids))


def test_perfect_and_worst_rankings() -> None:
    # two orthogonal clusters: every query ranks its own class first
    g = np.zeros((6, 2), np.float32)
    g[:3, 0] = 1.0
    g[3:, 1] = 1.0
    labels = ["a"] * 3 + ["b"] * 3
    ids = list(range(6))
    got = evaluate(g, labels, g, labels, ks=(1, 2, 5), query_ids=ids, gallery_ids=ids)
    assert got.map == pytest.approx(1.0)
    assert got.precision_at == pytest.approx({1: 1.0, 2: 1.0, 5: 2 / 5})
    assert got.recall_at == pytest.approx({1: 0.5, 2: 1.0, 5: 1.0})

    # the two relevant items ranked last of four: AP = (1/3 + 2/4) / 2
    q = np.array([[1.0, 0.0]], np.float32)
    gallery = np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [-0.9, 0.0]], np.float32)
    got = evaluate(q, ["x"], gallery, ["y", "y", "x", "x"], ks=(1, 2, 4))
    assert got.map == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert got.precision_at == pytest.approx({1: 0.0, 2: 0.0, 4: 0.5})
    assert got.recall_at == pytest.approx({1: 0.0, 2: 0.0, 4: 1.0})


def test_no_query_counts() -> None:
    gallery, g_labels = _data(30, 10, classes=2)
    got = evaluate(gallery[:2], ["none", "none"], gallery, g_labels, ks=(1, 5))
    assert got == RetrievalScores(0.0, {1: 0.0, 5: 0.0}, {1: 0.0, 5: 0.0}, 0)


def test_average_precision_by_hand() -> None:
    assert average_precision(np.array([True, False, True]), 2) == pytest.approx((1 + 2 / 3) / 2)
    # a relevant item ranked past the end still counts in the denominator
    assert average_precision(np.array([True, False, True]), 3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision(np.array([False, False]), 2) == 0.0
    assert average_precision(np.array([True, True, True]), 3) == pytest.approx(1.0)
    assert average_precision(np.array([], dtype=bool), 0) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        rel = rng.random(int(rng.integers(1, 40))) < 0.3
        n = int(rel.sum()) + int(rng.integers(0, 3))
        if n == 0:
            continue
        expected = _naive_ap([bool(r) for r in rel], True, n)
        assert average_precision(rel, n) == pytest.approx(expected)


def test_against_sklearn_average_precision() -> None:
    """A second, third-party reference (skipped where scikit-learn is not installed)."""
    metrics = pytest.importorskip("sklearn.metrics")
    queries, q_labels = _data(40, 25, classes=4)
    gallery, g_labels = _data(41, 80, classes=4)
    aps = []
    for i in range(len(queries)):
        y_true = np.array([lab == q_labels[i] for lab in g_labels])
        if y_true.any():
            aps.append(metrics.average_precision_score(y_true, gallery.astype(np.float64) @ queries[i]))
    got = evaluate(queries, q_labels, gallery, g_labels, ks=(1,), block=6)
    assert got.queries == len(aps)
    assert got.map == pytest.approx(float(np.mean(aps)), abs=1e-9)
