"""PCA-whitening (retrieval/extractors/whitening.py): the learned transform whitens, the
shrinkage is Ledoit-Wolf's, a collection smaller than the dimension stays finite, it
helps where a shared nuisance direction hides identity, and stored bytes are checked.

Pure numpy on synthetic vectors: no model is built.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from retrieval.errors import RetrievalError
from retrieval.extractors.whitening import Whitening, ledoit_wolf_shrinkage, learn_whitening


def _anisotropic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n rows of d dims with variances spread over three orders of magnitude, axes rotated."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return (rng.standard_normal((n, d)) * np.logspace(0, -1.5, d)) @ rotation + rng.standard_normal(d)


def test_whitened_learning_vectors_have_identity_covariance() -> None:
    x = _anisotropic(2000, 16)
    w = learn_whitening(x, shrinkage=0.0)
    assert (w.in_dim, w.dim, w.shrinkage) == (16, 16, 0.0)
    y = (x - w.mean) @ w.projection  # before the final L2 normalisation
    np.testing.assert_allclose(np.cov(y.T, bias=True), np.eye(16), atol=1e-4)
    assert np.all(np.diff(w.eigenvalues) <= 0)  # largest first
    out = w.apply(x)
    assert out.dtype == np.float32 and out.shape == (2000, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_shrinkage_is_ledoit_wolf() -> None:
    covariance = pytest.importorskip("sklearn.covariance")
    for n, d, seed in ((500, 20, 1), (30, 64, 2), (12, 5, 3)):
        x = _anisotropic(n, d, seed)
        centred = x - x.mean(0)
        expected = covariance.ledoit_wolf_shrinkage(x)
        assert ledoit_wolf_shrinkage(centred, centred.T @ centred / n) == pytest.approx(expected, rel=1e-9)
        assert learn_whitening(x).shrinkage == pytest.approx(expected, rel=1e-9)


def test_shrinkage_moves_eigenvalues_towards_their_mean() -> None:
    x = _anisotropic(400, 12, seed=4)
    raw, half = learn_whitening(x, shrinkage=0.0), learn_whitening(x, shrinkage=0.5)
    mean_eigenvalue = np.trace(np.cov(x.T, bias=True)) / 12
    np.testing.assert_allclose(half.eigenvalues, 0.5 * raw.eigenvalues + 0.5 * mean_eigenvalue, rtol=1e-9)
    np.testing.assert_allclose(learn_whitening(x, shrinkage=1.0).eigenvalues, mean_eigenvalue, rtol=1e-9)


def test_a_collection_smaller_than_the_dimension_keeps_n_minus_1_directions() -> None:
    x = _anisotropic(10, 64, seed=5)
    w = learn_whitening(x)
    assert w.dim == 9 and 0 < w.shrinkage <= 1
    assert learn_whitening(x, dim=4).dim == 4
    assert learn_whitening(x, shrinkage=0.0).dim == 9  # the 54 directions with no variance are never divided by
    fresh = np.random.default_rng(6).standard_normal((50, 64))
    for out in (w.apply(fresh), learn_whitening(x, shrinkage=0.0).apply(fresh)):
        assert np.isfinite(out).all()
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_whitening_finds_identity_hidden_under_a_shared_direction() -> None:
    """Every image carries a strong random amount of one shared pattern (lighting, say);
    its identity is a weaker signal. Raw cosine matches by the shared pattern, whitening
    by identity: the effect that makes whitening worth its cost in retrieval."""
    rng = np.random.default_rng(7)
    n, d = 200, 64
    identity = rng.standard_normal((n, d))
    shared = rng.standard_normal(d) * 3
    refs = identity + rng.standard_normal((n, 1)) * shared
    queries = identity + 0.5 * rng.standard_normal((n, d)) + rng.standard_normal((n, 1)) * shared

    def top1(q: np.ndarray, g: np.ndarray) -> float:
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        return float((np.argmax(qn @ gn.T, axis=1) == np.arange(n)).mean())

    w = learn_whitening(refs)
    raw, whitened = top1(queries, refs), top1(w.apply(queries), w.apply(refs))
    assert whitened > 0.9 and whitened > raw + 0.2, (raw, whitened)


@pytest.mark.parametrize("vectors, kwargs, complaint", [
    (np.ones((1, 4)), {}, "at least 2 vectors"),
    (np.ones((5, 4)), {}, "all the vectors are the same"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), {}, "NaN or infinite"),
    (np.ones(4), {}, "2-D array"),
    (np.array([["a", "b"], ["c", "d"]]), {}, "2-D array of numbers"),
    (np.eye(4), {"dim": 0}, r"dimension 0 out of range \(1 to 4\)"),
    (np.eye(4), {"dim": 5}, "out of range"),
    (np.eye(4), {"shrinkage": 1.5}, r"shrinkage 1.5 out of range \(0 to 1\)"),
])
def test_bad_learning_input_is_refused(vectors: np.ndarray, kwargs: dict, complaint: str) -> None:
    with pytest.raises(RetrievalError, match=complaint):
        learn_whitening(vectors, **kwargs)


def test_apply_checks_its_input() -> None:
    w = learn_whitening(_anisotropic(50, 8))
    with pytest.raises(RetrievalError, match="have 6 dimensions; the whitening takes 8"):
        w.apply(np.ones((3, 6)))
    with pytest.raises(RetrievalError, match="NaN or infinite"):
        w.apply(np.full((1, 8), np.inf))


def test_bytes_round_trip_exactly() -> None:
    w = learn_whitening(_anisotropic(40, 12), dim=6)
    back = Whitening.from_bytes(w.to_bytes(), in_dim=12)
    for name in ("mean", "projection", "eigenvalues"):
        np.testing.assert_array_equal(getattr(back, name), getattr(w, name))
    assert back.shrinkage == w.shrinkage and back.dim == 6
    x = _anisotropic(5, 12, seed=9)
    np.testing.assert_array_equal(back.apply(x), w.apply(x))


def _npz(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def _fields(w: Whitening, **changes: object) -> dict[str, object]:
    return {"format": np.int64(1), "mean": w.mean, "projection": w.projection, "eigenvalues": w.eigenvalues,
            "shrinkage": np.float64(w.shrinkage), **changes}


@pytest.mark.parametrize("damage, complaint", [
    (lambda b, w: b[: len(b) // 2], "cannot be read"),
    (lambda b, w: b"not a zip at all", "cannot be read"),
    (lambda b, w: b"", "cannot be read"),
    (lambda b, w: _npz(**{k: v for k, v in _fields(w).items() if k != "mean"}), "cannot be read"),
    (lambda b, w: _npz(**_fields(w), extra=np.zeros(1)), "cannot be read"),
    (lambda b, w: _npz(**_fields(w, format=np.int64(2))), "has format 2"),
    (lambda b, w: _npz(**_fields(w, mean=w.mean[:-1])), "do not fit together"),
    (lambda b, w: _npz(**_fields(w, eigenvalues=w.eigenvalues[:-1])), "do not fit together"),
    (lambda b, w: _npz(**_fields(w, projection=w.projection.astype(np.int32))), "do not fit together"),
    (lambda b, w: _npz(**_fields(w, eigenvalues=-w.eigenvalues)), "out of range"),
    (lambda b, w: _npz(**_fields(w, mean=np.full_like(w.mean, np.nan))), "out of range"),
    (lambda b, w: _npz(**_fields(w, shrinkage=np.float64(2.0))), "out of range"),
    # an object array would need unpickling, which could run code: refused unread
    (lambda b, w: _npz(**_fields(w, mean=np.array([{"x": 1}], dtype=object))), "cannot be read"),
])
def test_damaged_bytes_are_refused_in_one_line(damage, complaint: str) -> None:  # noqa: ANN001
    w = learn_whitening(_anisotropic(30, 8), dim=4)
    with pytest.raises(RetrievalError, match=complaint) as info:
        Whitening.from_bytes(damage(w.to_bytes(), w))
    assert "\n" not in str(info.value)


def test_bytes_for_another_extractor_dimension_are_refused() -> None:
    data = learn_whitening(_anisotropic(30, 8)).to_bytes()
    with pytest.raises(RetrievalError, match="takes 8-d vectors; the extractor makes 1280-d ones"):
        Whitening.from_bytes(data, in_dim=1280)
