"""R-MAC regional pooling (retrieval/extractors/pooling/regional.py) against hand-worked
region grids, a literal transcription of cirtorch's rmac, and the validity mask.

Pure tensor tests: no model is built.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from retrieval.errors import RetrievalError
from retrieval.extractors import ExtractorConfig
from retrieval.extractors.pooling import POOLINGS, RMAC, create_pooling, gem, rmac, valid_mask
from retrieval.extractors.pooling.regional import rmac_regions


def _fmap(n: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g, dtype=torch.float64) + 0.01


def _cirtorch_rmac(x: torch.Tensor, L: int = 3, eps: float = 1e-6) -> torch.Tensor:  # noqa: N803
    """cirtorch.layers.functional.rmac (Radenović et al.), transcribed line by line,
    without its final (N, C, 1, 1) shape; the one independent reference here."""
    ovr = 0.4
    steps = torch.tensor([2, 3, 4, 5, 6, 7], dtype=torch.float64)
    W, H = x.size(3), x.size(2)  # noqa: N806
    w = min(W, H)
    b = (max(H, W) - w) / (steps - 1)
    idx = torch.argmin(torch.abs(((w**2 - w * b) / w**2) - ovr))
    Wd = Hd = 0  # noqa: N806
    if H < W:
        Wd = idx.item() + 1  # noqa: N806
    elif H > W:
        Hd = idx.item() + 1  # noqa: N806
    v = F.max_pool2d(x, (x.size(-2), x.size(-1)))
    v = v / (torch.norm(v, p=2, dim=1, keepdim=True) + eps).expand_as(v)
    for l in range(1, L + 1):  # noqa: E741
        wl = math.floor(2 * w / (l + 1))
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if l + Wd == 1 else (W - wl) / (l + Wd - 1)
        cen_w = torch.floor(wl2 + torch.arange(l - 1 + Wd + 1, dtype=torch.float64) * b) - wl2
        b = 0 if l + Hd == 1 else (H - wl) / (l + Hd - 1)
        cen_h = torch.floor(wl2 + torch.arange(l - 1 + Hd + 1, dtype=torch.float64) * b) - wl2
        for i_ in cen_h.tolist():
            for j_ in cen_w.tolist():
                if wl == 0:
                    continue
                r = x[:, :, int(i_):int(i_) + wl, int(j_):int(j_) + wl]
                vt = F.max_pool2d(r, (r.size(-2), r.size(-1)))
                v = v + vt / (torch.norm(vt, p=2, dim=1, keepdim=True) + eps).expand_as(vt)
    return v[..., 0, 0]


@pytest.mark.parametrize(("h", "w", "levels", "expected"), [
    # square: the whole map, then l x l squares of side floor(2 * 3 / (l + 1))
    (3, 3, 2, [(0, 0, 3, 3), (0, 0, 3, 3), (0, 0, 2, 2), (0, 1, 2, 2), (1, 0, 2, 2), (1, 1, 2, 2)]),
    # 2 x 3: two 2 x 2 squares along the long side overlap by 50%, the nearest to 40% on offer
    (2, 3, 1, [(0, 0, 2, 3), (0, 0, 2, 2), (0, 1, 2, 2)]),
    (3, 2, 1, [(0, 0, 3, 2), (0, 0, 2, 2), (1, 0, 2, 2)]),
    # one row: 6 single cells a step of 0.6 apart (overlap 1 - 0.6 = 40%), floored as cirtorch
    # does, so some repeat; level 2 would need squares of floor(2/3) = 0 cells and is skipped
    (1, 4, 2, [(0, 0, 1, 4), (0, 0, 1, 1), (0, 0, 1, 1), (0, 1, 1, 1), (0, 1, 1, 1), (0, 2, 1, 1), (0, 3, 1, 1)]),
])
def test_region_grid_worked_by_hand(h: int, w: int, levels: int, expected: list) -> None:
    assert rmac_regions(h, w, levels) == expected


@pytest.mark.parametrize("h, w", [(1, 1), (3, 3), (9, 9), (9, 5), (4, 9), (7, 12), (16, 10), (2, 17)])
def test_regions_lie_inside_the_map(h: int, w: int) -> None:
    for top, left, rh, rw in rmac_regions(h, w, 5):
        assert rh >= 1 and rw >= 1 and top >= 0 and left >= 0 and top + rh <= h and left + rw <= w


def test_rmac_on_a_hand_made_map() -> None:
    """2 x 3 map, 2 channels, L=1: regions whole, left 2x2, right 2x2 (see the grid test)."""
    x = torch.tensor([[[1.0, 0.0, 0.0],
                       [0.0, 0.0, 3.0]],
                      [[0.0, 2.0, 0.0],
                       [0.0, 0.0, 0.0]]], dtype=torch.float64).unsqueeze(0)
    whole, left, right = torch.tensor([3.0, 2.0]), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])
    expected = whole / whole.norm() + left / left.norm() + right / right.norm()
    torch.testing.assert_close(rmac(x, levels=1, eps=0.0)[0], expected.double())


@pytest.mark.parametrize("levels", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(2, 6, 9, 9), (1, 4, 9, 5), (3, 3, 6, 11), (2, 5, 13, 7), (1, 2, 1, 1)])
def test_rmac_matches_cirtorch(levels: int, shape: tuple[int, int, int, int]) -> None:
    x = _fmap(*shape, seed=levels * 100 + sum(shape))
    out = rmac(x, levels)
    assert out.shape == shape[:2]
    torch.testing.assert_close(F.normalize(out, dim=1), F.normalize(_cirtorch_rmac(x, levels), dim=1))


def test_gem_regions_use_the_exponent() -> None:
    x = _fmap(2, 4, 5, 7, seed=4)
    regions = rmac_regions(5, 7, 2)
    expected = torch.stack([F.normalize(gem(x[..., t:t + h, l:l + w], 3.0), dim=1) for t, l, h, w in regions]).sum(0)
    torch.testing.assert_close(rmac(x, 2, p=3.0), expected)
    assert not torch.allclose(F.normalize(rmac(x, 2, p=3.0), dim=1), F.normalize(rmac(x, 2), dim=1))


def test_padding_does_not_change_the_descriptor_of_the_valid_region() -> None:
    """Letterboxed images: the grid is laid over the valid cells, whatever the padding holds."""
    x = _fmap(3, 6, 9, 9, seed=8)
    heights, widths = torch.tensor([288, 96, 160]), torch.tensor([160, 288, 288])
    mask = valid_mask(heights, widths, 288, 9, 9).double()
    noisy = x.clone()
    noisy[mask.expand_as(x) == 0] = 50.0  # bright padding would win every max it took part in
    out = rmac(noisy, 3, mask=mask)
    for i, (r, c) in enumerate([(9, 5), (3, 9), (5, 9)]):  # ceil(h * 9 / 288), ceil(w * 9 / 288)
        torch.testing.assert_close(out[i], rmac(x[i:i + 1, :, :r, :c], 3)[0])
    torch.testing.assert_close(RMAC(3)(noisy, mask), out)
    assert not torch.allclose(rmac(noisy, 3), out)  # without the mask the padding would count


def test_the_grid_follows_a_mask_anywhere_on_the_map() -> None:
    x = _fmap(1, 3, 8, 8, seed=2)
    mask = torch.zeros(1, 1, 8, 8, dtype=x.dtype)
    mask[..., 2:7, 1:4] = 1  # a 5 x 3 box away from the corner
    torch.testing.assert_close(rmac(x, 2, mask=mask), rmac(x[..., 2:7, 1:4], 2))


def test_registry_declares_levels_and_optional_p() -> None:
    assert "rmac" in POOLINGS
    assert ExtractorConfig(pooling="rmac").pooling_params == {"levels": 3}
    assert ExtractorConfig(pooling="rmac", pooling_params={"levels": "2", "p": 3}).pooling_params == \
        {"levels": 2, "p": 3.0}
    module = create_pooling("rmac", {"levels": 4})
    assert isinstance(module, RMAC) and (module.levels, module.p) == (4, None)
    assert "levels=4" in repr(module)


@pytest.mark.parametrize("params, complaint", [
    ({"levels": 0}, "from 1 to 5"), ({"levels": 6}, "from 1 to 5"), ({"levels": 2.5}, "an integer"),
    ({"p": 0.5}, "from 1 to 20"), ({"p": "x"}, "a number"), ({"L": 3}, "parameters: levels, p"),
])
def test_bad_parameters_are_refused_in_one_line(params: dict, complaint: str) -> None:
    with pytest.raises(RetrievalError, match=complaint) as info:
        ExtractorConfig(pooling="rmac", pooling_params=params)
    assert "\n" not in str(info.value)
