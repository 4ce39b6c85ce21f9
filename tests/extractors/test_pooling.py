"""Global pooling (retrieval.extractors.pooling) against plain reference formulas.

Pure tensor tests: no model is built, everything runs in milliseconds.
"""

from __future__ import annotations

import math

import pytest
import torch

from retrieval.errors import RetrievalError, UnknownNameError
from retrieval.extractors.pooling import (
    POOLINGS,
    AvgPool,
    GeM,
    MaxPool,
    avg,
    create_pooling,
    gem,
    max_,
    valid_mask,
)


def _fmap(n: int = 3, c: int = 5, h: int = 7, w: int = 7, seed: int = 0, positive: bool = True) -> torch.Tensor:
    """A random (N, C, H, W) feature map; positive like post-ReLU activations by default."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    return x.abs() + 0.01 if positive else x


def _gem_reference(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """The GeM formula written out: (1/|X| sum_x max(x, eps)^p)^(1/p) per channel."""
    n, c = x.shape[:2]
    out = torch.empty(n, c, dtype=x.dtype)
    for i in range(n):
        for j in range(c):
            cells = x[i, j].flatten().clamp(min=eps)
            out[i, j] = (cells.pow(p).sum() / cells.numel()).pow(1.0 / p)
    return out


# Each pooling by name: (function(x, mask) -> (N, C), unmasked plain reference)
REFERENCES = {
    "gem": (lambda x, mask=None: gem(x, 3.0, mask=mask), lambda x: _gem_reference(x, 3.0)),
    "avg": (avg, lambda x: x.mean(dim=(-2, -1))),
    "max": (max_, lambda x: x.amax(dim=(-2, -1))),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 8, 7, 7), (3, 4, 9, 5), (1, 16, 3, 12)])
def test_pooling_matches_plain_reference(name: str, shape: tuple[int, int, int, int]) -> None:
    fn, ref = REFERENCES[name]
    x = _fmap(*shape, seed=sum(shape))
    out = fn(x)
    assert out.shape == shape[:2]
    torch.testing.assert_close(out, ref(x))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_modules_from_registry_match_the_functions(name: str) -> None:
    fn, ref = REFERENCES[name]
    module = create_pooling(name)
    assert isinstance(module, POOLINGS.entry(name).factory)
    x = _fmap(2, 6, 5, 4, seed=3)
    out = module(x)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out, ref(x).to(out.dtype))
    mask = valid_mask(torch.tensor([100, 200]), torch.tensor([200, 60]), 200, 5, 4).double()
    torch.testing.assert_close(module(x, mask), fn(x, mask=mask).to(out.dtype))


def test_avg_and_max_accept_negative_values() -> None:
    x = _fmap(2, 3, 4, 4, seed=1, positive=False)
    torch.testing.assert_close(avg(x), x.mean(dim=(-2, -1)))
    torch.testing.assert_close(max_(x), x.amax(dim=(-2, -1)))
    all_negative = -x.abs() - 1.0
    torch.testing.assert_close(max_(all_negative), all_negative.amax(dim=(-2, -1)))
    # masked max of an all-negative map must not pick up a 0 from masked-out cells
    mask = torch.zeros(2, 1, 4, 4, dtype=x.dtype)
    mask[..., :2, :3] = 1
    torch.testing.assert_close(max_(all_negative, mask), all_negative[..., :2, :3].amax(dim=(-2, -1)))


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 4.5, 10.0])
def test_gem_formula_for_several_exponents(p: float) -> None:
    x = _fmap(2, 4, 6, 5, seed=int(p * 10))
    torch.testing.assert_close(gem(x, p), _gem_reference(x, p))
    torch.testing.assert_close(GeM(p)(x.float()), _gem_reference(x, p).float(), rtol=1e-4, atol=1e-5)


def test_gem_clamps_below_eps() -> None:
    x = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    x[0, 0, 0, 0] = -5.0  # negative activations count as eps, not as a negative power
    out = gem(x, 3.0, eps=1e-6)
    torch.testing.assert_close(out, torch.full((1, 2), 1e-6, dtype=torch.float64))
    assert torch.isfinite(gem(-torch.ones(1, 1, 2, 2), 3.0)).all()


def test_gem_with_p_one_is_average_pooling() -> None:
    x = _fmap(3, 8, 7, 7, seed=11)
    torch.testing.assert_close(gem(x, 1.0), avg(x))
    torch.testing.assert_close(GeM(1.0)(x.float()), AvgPool()(x.float()))
    mask = valid_mask(torch.tensor([224, 100, 31]), torch.tensor([50, 224, 224]), 224, 7, 7).double()
    torch.testing.assert_close(gem(x, 1.0, mask=mask), avg(x, mask))


def test_gem_approaches_max_for_large_p() -> None:
    x = _fmap(2, 4, 7, 7, seed=5)
    big = gem(x, 200.0)
    assert (big <= max_(x) + 1e-9).all()
    torch.testing.assert_close(big, max_(x), rtol=0.05, atol=0)
    # the generalised mean is monotone in p
    ps = [1.0, 2.0, 3.0, 6.0, 20.0]
    means = torch.stack([gem(x, p) for p in ps])
    assert (means[1:] >= means[:-1] - 1e-12).all()


def test_gem_exponent_is_learnable() -> None:
    pool = GeM(3.0)
    assert isinstance(pool.p, torch.nn.Parameter) and pool.p.item() == 3.0
    x = _fmap(2, 4, 5, 5, seed=2).float()
    pool(x).sum().backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad) and pool.p.grad.abs() > 0
    assert "p=3.0000" in repr(pool)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_masked_pooling_equals_pooling_of_the_valid_region(name: str) -> None:
    fn, ref = REFERENCES[name]
    x = _fmap(2, 6, 7, 7, seed=7)
    mask = torch.zeros(2, 1, 7, 7, dtype=x.dtype)
    mask[..., :4, :5] = 1
    # what lies outside the mask must not matter at all
    x_noisy = x.clone()
    x_noisy[..., 4:, :] = 1e3
    x_noisy[..., :, 5:] = 1e3
    expected = ref(x[..., :4, :5])
    torch.testing.assert_close(fn(x, mask=mask), expected)
    torch.testing.assert_close(fn(x_noisy, mask=mask), expected)
    torch.testing.assert_close(create_pooling(name)(x_noisy, mask), expected)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_masked_pooling_per_sample_regions(name: str) -> None:
    """Each image of a batch has its own valid region (as letterboxing gives)."""
    fn, ref = REFERENCES[name]
    x = _fmap(3, 4, 9, 9, seed=9)
    heights, widths = torch.tensor([288, 96, 288]), torch.tensor([160, 288, 288])
    mask = valid_mask(heights, widths, 288, 9, 9).to(x.dtype)
    out = fn(x, mask=mask)
    regions = [(9, 5), (3, 9), (9, 9)]  # ceil(h * 9 / 288), ceil(w * 9 / 288)
    for i, (r, c) in enumerate(regions):
        torch.testing.assert_close(out[i], ref(x[i : i + 1, :, :r, :c])[0])


def _valid_mask_reference(h: int, w: int, size: int, fh: int, fw: int) -> torch.Tensor:
    """Cell (i, j) is valid iff it covers at least one real pixel (its first pixel is real)."""
    m = torch.zeros(1, fh, fw)
    for i in range(fh):
        for j in range(fw):
            if i * size / fh < h and j * size / fw < w:
                m[0, i, j] = 1
    return m


@pytest.mark.parametrize(
    ("h", "w", "size", "fh", "fw", "rows", "cols"),
    [
        (224, 224, 224, 7, 7, 7, 7),  # square: everything valid
        (112, 224, 224, 7, 7, 4, 7),  # 400x200 letterboxed into 224: half height, partial 4th row
        (224, 112, 224, 7, 7, 7, 4),  # tall
        (128, 224, 224, 7, 7, 4, 7),  # exactly 4 cells of 32 px
        (144, 288, 288, 9, 9, 5, 9),  # 2:1 into the default 288 canvas
        (1, 1, 288, 9, 9, 1, 1),  # at least one cell
        (288, 33, 288, 9, 9, 9, 2),  # one pixel into the second column
        (100, 300, 300, 10, 10, 4, 10),
    ],
)
def test_valid_mask_shapes_and_values(h: int, w: int, size: int, fh: int, fw: int, rows: int, cols: int) -> None:
    mask = valid_mask(torch.tensor([h]), torch.tensor([w]), size, fh, fw)
    assert mask.shape == (1, 1, fh, fw)
    assert mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    expected = torch.zeros(fh, fw)
    expected[:rows, :cols] = 1
    torch.testing.assert_close(mask[0, 0], expected)
    torch.testing.assert_close(mask[0], _valid_mask_reference(h, w, size, fh, fw))


def test_valid_mask_batch_against_reference() -> None:
    g = torch.Generator().manual_seed(0)
    size, fh, fw = 288, 9, 9
    heights = torch.randint(1, size + 1, (64,), generator=g)
    widths = torch.randint(1, size + 1, (64,), generator=g)
    mask = valid_mask(heights, widths, size, fh, fw)
    assert mask.shape == (64, 1, fh, fw)
    for i in range(64):
        torch.testing.assert_close(mask[i], _valid_mask_reference(int(heights[i]), int(widths[i]), size, fh, fw))
        assert mask[i].sum() == math.ceil(int(heights[i]) * fh / size) * math.ceil(int(widths[i]) * fw / size)


def test_valid_mask_non_square_feature_map() -> None:
    mask = valid_mask(torch.tensor([224, 50]), torch.tensor([100, 224]), 224, 14, 7)
    assert mask.shape == (2, 1, 14, 7)
    assert mask[0, 0].sum(0).tolist() == [14, 14, 14, 14, 0, 0, 0]  # ceil(100*7/224) = 4 columns
    assert mask[1, 0].sum(1).tolist() == [7, 7, 7, 7] + [0] * 10  # ceil(50*14/224) = 4 rows


def test_create_pooling_registry() -> None:
    assert set(POOLINGS) == {"gem", "avg", "max", "rmac"}  # R-MAC: tests/extractors/test_rmac.py
    assert isinstance(create_pooling("gem"), GeM)
    assert create_pooling("gem").p.item() == 3.0  # the declared default
    assert create_pooling("gem", {"p": 4.0}).p.item() == 4.0
    assert create_pooling("gem", {"p": "4.5"}).p.item() == 4.5  # as typed on a command line
    assert isinstance(create_pooling("avg"), AvgPool)
    assert isinstance(create_pooling("max"), MaxPool)


@pytest.mark.parametrize("name", ["mean", "GeM", "", "max_"])
def test_create_pooling_unknown_name(name: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        create_pooling(name)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert repr(name) in message
    for known in ("gem", "avg", "max"):
        assert known in message


@pytest.mark.parametrize("params, complaint", [({"p": 0.5}, "from 1 to 20"), ({"p": "high"}, "a number"),
                                               ({"p": float("nan")}, "finite"), ({"q": 3}, "parameters: p")])
def test_pooling_parameters_are_checked_by_the_registry(params: dict, complaint: str) -> None:
    with pytest.raises(RetrievalError, match=complaint):
        create_pooling("gem", params)


def test_avg_and_max_take_no_parameters() -> None:
    with pytest.raises(RetrievalError, match="parameters: none"):
        create_pooling("avg", {"p": 3})
