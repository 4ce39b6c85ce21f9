"""DescriptorNet (retrieval/extractors/bottleneck.py): trunk, masked pooling over the
cells of real pixels, and the uint8 -> normalised input fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from retrieval.extractors import Extractor
from retrieval.extractors.bottleneck import DescriptorNet
from retrieval.extractors.pooling import create_pooling
from retrieval.images.preprocess import letterbox

from ..badimages import sample_image


@pytest.mark.parametrize("pooling", ["gem", "avg", "max"])
def test_descriptor_ignores_padding_beyond_the_valid_cells(pooling: str) -> None:
    """DescriptorNet pools only the cells over real pixels.

    With a trunk whose cells see exactly their own 32x32 pixels, what lies in the padding
    cannot change the descriptor at all (a real CNN's receptive field does reach into the
    padding, so there the claim holds only approximately: see the next test).
    """
    net = DescriptorNet(nn.Sequential(nn.AvgPool2d(32), nn.ReLU()), create_pooling(pooling),
                        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224).eval()
    rng = np.random.default_rng(1)
    grey = np.full((2, 224, 224, 3), 128, np.uint8)
    grey[0, :96, :] = rng.integers(0, 256, (96, 224, 3))  # wide: 224 x 96 valid
    grey[1, :, :160] = rng.integers(0, 256, (224, 160, 3))  # tall: 160 x 224 valid
    noisy = grey.copy()
    noisy[0, 96:] = rng.integers(0, 256, (128, 224, 3))
    noisy[1, :, 160:] = rng.integers(0, 256, (224, 64, 3))
    hs, ws = torch.tensor([96, 224]), torch.tensor([224, 160])
    with torch.inference_mode():
        a = net(torch.from_numpy(grey), hs, ws)
        b = net(torch.from_numpy(noisy), hs, ws)
        unmasked = net(torch.from_numpy(noisy), torch.tensor([224, 224]), torch.tensor([224, 224]))
    assert a.shape == (2, 3)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, unmasked, atol=1e-3), "the mask should matter"
    # the uint8 -> normalised float fold equals ((x / 255) - mean) / std
    x = torch.from_numpy(grey[:1, :96, :]).permute(0, 3, 1, 2).double()
    cells = nn.functional.avg_pool2d((x / 255 - 0.5) / 0.5, 32).clamp(min=0)
    expected = {"gem": lambda c: c.clamp(min=1e-6).pow(3).mean((-2, -1)).pow(1 / 3),
                "avg": lambda c: c.mean((-2, -1)), "max": lambda c: c.amax((-2, -1))}[pooling](cells)
    torch.testing.assert_close(a[0].double(), nn.functional.normalize(expected, dim=1)[0], rtol=1e-4, atol=1e-5)


def test_real_extractor_is_nearly_blind_to_padding(extractor: Extractor) -> None:
    canvas, h, w = letterbox(sample_image("airplanes", "image_0012.jpg"), 288, "bicubic")  # 397x154 photo
    assert (h, w) == (112, 288)
    noisy = canvas.copy()
    noisy[h:] = np.random.default_rng(2).integers(0, 256, noisy[h:].shape)
    v = extractor.embed(torch.from_numpy(np.stack([canvas, noisy])), torch.tensor([h, h]), torch.tensor([w, w]))
    np.testing.assert_allclose(v[0], extractor.embed_images([sample_image("airplanes", "image_0012.jpg")])[0],
                               rtol=0, atol=1e-5)
    assert float(v[0] @ v[1]) > 0.9
