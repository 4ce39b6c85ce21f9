"""Batched JPEG decoding on the model's device, exercised on the CPU.

`--decode device` on the CPU runs the same code as on a GPU (retrieval.images.device),
with torchvision's libjpeg decoder in place of nvJPEG; what nvJPEG alone would do
(reject a file, run out of memory) is simulated.

Tolerance, device canvases against the host Preprocessor's (Pillow), per image over the
valid region, in 8-bit grey levels: mean absolute difference <= 1.0, 99th percentile
<= 4, maximum <= 32 (a few pixels at hard edges, where Pillow's fixed-point bicubic and
torch's float one round an overshoot differently; measured: mean 0.08-0.5, max 16), and
the embeddings of the two canvases agree to cosine >= 0.99. The one systematic source of
difference is that the host decodes large JPEGs at a reduced draft scale and the device
at full size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import retrieval.images.device as device_decode
import retrieval.images.embedding
from retrieval.catalog import STATUS_FAILED
from retrieval.images.device import decodes_on_device, finish_batch
from retrieval.options import check_decode_mode
from retrieval.errors import UnknownNameError
from retrieval.images.batches import Decoded, DecodeDataset, DecodedBatch, collate_decoded
from retrieval.images.files import FileBytes, content_digest
from retrieval.images.preprocess import Preprocessor

from ..badimages import (
    EXIF_ORIENTATION,
    sample_photos,
    write_cmyk_jpeg,
    write_gray16_png,
    write_palette_png,
    write_rgba_png,
    write_truncated_jpeg,
)
from ..conftest import caltech_slice

CPU = torch.device("cpu")
MEAN_TOL, P99_TOL, MAX_TOL, COSINE_MIN = 1.0, 4, 32, 0.99


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real photos of several sizes and aspects, a large one (the host's draft scale
    applies) and a greyscale JPEG (decoded to RGB by both paths)."""
    folder = tmp_path_factory.mktemp("photos")
    chosen = [*sample_photos(2, "cup"), *sample_photos(1, "airplanes"), *sample_photos(1, "chair")]
    large = folder / "large.jpg"
    Image.open(chosen[0]).convert("RGB").resize((1600, 1200), Image.Resampling.BICUBIC).save(large, quality=90)
    grey = folder / "grey.jpg"
    Image.open(chosen[2]).convert("L").save(grey, quality=90)
    return [*chosen, large, grey]


def _device_batch(paths: list[Path], preprocess: Preprocessor) -> tuple[list[Decoded], DecodedBatch]:
    """What the loader hands over with device decoding on, and the finished batch."""
    dataset = DecodeDataset([str(p) for p in paths], preprocess, jpeg_bytes=True)
    raw = [dataset[i] for i in range(len(paths))]
    return raw, finish_batch(collate_decoded(raw), preprocess, CPU, dataset.decode_on_host)


def _host(paths: list[Path], preprocess: Preprocessor) -> list[Decoded]:
    dataset = DecodeDataset([str(p) for p in paths], preprocess)
    return [dataset[i] for i in range(len(paths))]


def _canvases(batch: DecodedBatch) -> dict[int, tuple[np.ndarray, int, int]]:
    """Index -> (canvas, valid height, valid width) of a finished batch."""
    assert len(batch.indices) == len(set(batch.indices)) == len(batch.pixels) == len(batch.items)
    return {i: (batch.pixels[k].numpy(), int(batch.heights[k]), int(batch.widths[k]))
            for k, i in enumerate(batch.indices)}


def _pixel_difference(a: np.ndarray, b: np.ndarray, h: int, w: int) -> tuple[float, float, int]:
    """Mean, 99th percentile and maximum absolute difference over the valid region."""
    d = np.abs(a[:h, :w].astype(int) - b[:h, :w].astype(int))
    return float(d.mean()), float(np.percentile(d, 99)), int(d.max())


def _assert_close(device: dict[int, tuple[np.ndarray, int, int]], host: list[Decoded], what: str) -> None:
    for d in host:
        assert d.error is None, (what, d.index, d.error)
        canvas, h, w = device[d.index]
        assert (h, w) == (d.valid_h, d.valid_w), (what, d.index)
        mean, p99, top = _pixel_difference(canvas, d.pixels, h, w)
        assert mean <= MEAN_TOL and p99 <= P99_TOL and top <= MAX_TOL, (what, d.index, mean, p99, top)
        assert (canvas[h:] == 128).all() and (canvas[:, w:] == 128).all(), (what, d.index)  # the grey padding


def _assert_same_embeddings(extractor, device: dict[int, tuple[np.ndarray, int, int]], host: list[Decoded]) -> None:
    """One forward pass over both paths' canvases; each pair's cosine >= COSINE_MIN."""
    pixels = torch.from_numpy(np.stack([device[d.index][0] for d in host] + [d.pixels for d in host]))
    heights = torch.tensor([d.valid_h for d in host] * 2)
    widths = torch.tensor([d.valid_w for d in host] * 2)
    vectors = extractor.embed(pixels, heights, widths)
    cosines = (vectors[: len(host)] * vectors[len(host):]).sum(1)
    assert cosines.min() >= COSINE_MIN, cosines


# ---------------------------------------------------------------- agreement with the host path


@pytest.mark.parametrize("resize", ["letterbox", "squash"])
def test_device_canvases_match_the_host_preprocessor(extractor, photos: list[Path], resize: str) -> None:
    preprocess = Preprocessor(extractor.preprocessor.image_size, resize, extractor.preprocessor.interpolation)
    raw, batch = _device_batch(photos, preprocess)
    assert all(d.jpeg is None and d.error is None for d in batch.jpegs) and batch.failures == []
    assert all(d.jpeg is not None for d in raw), "every photo here must take the device path"
    host = _host(photos, preprocess)
    device = _canvases(batch)
    assert sorted(device) == list(range(len(photos)))
    _assert_close(device, host, resize)
    assert [(d.width, d.height, d.format) for d in sorted(batch.items, key=lambda d: d.index)] == \
        [(d.width, d.height, d.format) for d in host]  # the catalog's facts: full size, format
    _assert_same_embeddings(extractor, device, host)


def test_exif_orientations_match_the_host(extractor, tmp_path: Path) -> None:
    """Orientations 1-8 of one asymmetric photo: each upright as ImageOps.exif_transpose makes it."""
    stored = Image.open(sample_photos(1, "airplanes")[0]).convert("RGB")  # 393x165: wide, not symmetric
    paths = []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        paths.append(tmp_path / f"exif{orientation}.jpg")
        stored.save(paths[-1], "JPEG", quality=92, exif=exif.tobytes())
    preprocess = extractor.preprocessor
    raw, batch = _device_batch(paths, preprocess)
    assert [d.orientation for d in raw] == list(range(1, 9)) and all(d.jpeg is not None for d in raw)
    host = _host(paths, preprocess)
    # The test can fail: every orientation gives the host a different canvas.
    upright = host[0].pixels.astype(int)
    assert all(np.abs(d.pixels.astype(int) - upright).mean() > 10 for d in host[1:])
    assert [(d.width, d.height) for d in host] == [(393, 165)] * 4 + [(165, 393)] * 4
    device = _canvases(batch)
    _assert_close(device, host, "exif")
    assert {(d.index, d.width, d.height) for d in batch.items} == {(d.index, d.width, d.height) for d in host}
    _assert_same_embeddings(extractor, device, host)


def test_indexing_with_device_decoding_matches_cpu_decoding(make_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine.add on real Caltech-101 photos: decode='device' stores the vectors decode='cpu' does."""
    paths = caltech_slice(per_class=2, classes=3)
    finished: list[int] = []
    real_finish = retrieval.images.embedding.finish_batch

    def counting_finish(batch: DecodedBatch, *args: object) -> DecodedBatch:
        finished.append(len(batch.jpegs))
        return real_finish(batch, *args)

    monkeypatch.setattr(retrieval.images.embedding, "finish_batch", counting_finish)
    vectors = {}
    for decode in ("device", "cpu"):
        finished.clear()
        engine = make_engine(decode, decode=decode, batch_size=4)
        report = engine.add(paths)
        assert (report.added, report.failed) == (len(paths), [])
        rows = engine.catalog.rows_by_path(map(str, paths))
        vectors[decode] = engine.vectors([rows[str(p)].id for p in paths])
        assert sum(finished) == (len(paths) if decode == "device" else 0), decode
    cosines = (vectors["device"] * vectors["cpu"]).sum(1)
    assert cosines.min() >= COSINE_MIN, cosines


# ---------------------------------------------------------------- fallbacks


def test_a_corrupt_jpeg_fails_alone_and_the_batch_is_embedded(make_engine, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    good = sample_photos(3)
    for p in good:
        (folder / p.name).parent.mkdir(parents=True, exist_ok=True)
        (folder / p.name).write_bytes(p.read_bytes())
    # Header intact and the end marker present, so it goes to the device decoder, which
    # rejects the batch; retried alone, it fails there and on the host, and only it fails.
    data = bytearray(good[1].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    (folder / "scrambled.jpg").write_bytes(bytes(data))
    write_truncated_jpeg(folder / "truncated.jpg")  # no end marker: decoded (and refused) on the host
    dataset = DecodeDataset([str(folder / "scrambled.jpg"), str(folder / "truncated.jpg")],
                            Preprocessor(64), jpeg_bytes=True)
    assert dataset[0].jpeg is not None and dataset[1].error is not None and "truncated" in dataset[1].error

    engine = make_engine(decode="device", batch_size=8)
    report = engine.index([folder])
    failed = dict(report.failed)
    assert sorted(Path(p).name for p in failed) == ["scrambled.jpg", "truncated.jpg"]
    assert "broken data stream" in failed[str(folder / "scrambled.jpg")]
    assert report.added == len(good) and len(engine) == len(good)
    rows = engine.catalog.rows_by_path([str(folder / "scrambled.jpg"), *(str(folder / p.name) for p in good)])
    assert rows[str(folder / "scrambled.jpg")].status == STATUS_FAILED
    assert "broken data stream" in (rows[str(folder / "scrambled.jpg")].error or "")
    stored = engine.vectors([rows[str(folder / p.name)].id for p in good])
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("failure", ["rejected", "out_of_memory"])
def test_device_decoder_failures_retry_per_file_and_fall_back_to_the_host(
        photos: list[Path], monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """What nvJPEG may do: refuse one file it does not support, or run out of memory on a
    batch. The batch is retried file by file; a refused file is decoded by Pillow."""
    preprocess = Preprocessor(96)
    paths = photos[:4]
    _, expected = _device_batch(paths, preprocess)
    refused = paths[2].read_bytes()
    real_decode = device_decode.decode_jpeg
    calls: list[int] = []

    def fussy_decoder(data: list[torch.Tensor], **kwargs: object) -> list[torch.Tensor]:
        calls.append(len(data))
        if failure == "out_of_memory" and len(data) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        if failure == "rejected" and any(bytes(d.numpy()) == refused for d in data):
            raise RuntimeError("nvjpegDecodeBatched failed: unsupported JPEG (simulated)")
        return real_decode(data, **kwargs)

    monkeypatch.setattr(device_decode, "decode_jpeg", fussy_decoder)
    host_calls: list[int] = []
    dataset = DecodeDataset([str(p) for p in paths], preprocess, jpeg_bytes=True)

    def decode_on_host(i: int, raw: FileBytes) -> Decoded:
        host_calls.append(i)
        assert raw.data == paths[i].read_bytes() and raw.digest == content_digest(raw.data)  # the bytes rejected
        return dataset.decode_on_host(i, raw)

    batch = finish_batch(collate_decoded([dataset[i] for i in range(len(paths))]), preprocess, CPU, decode_on_host)
    assert calls == [4, 1, 1, 1, 1]
    assert host_calls == ([2] if failure == "rejected" else [])
    assert batch.failures == []
    got, want = _canvases(batch), _canvases(expected)
    assert sorted(got) == [0, 1, 2, 3]
    for i in (0, 1, 3):
        assert np.array_equal(got[i][0], want[i][0]), i
    host = _host(paths, preprocess)[2]
    if failure == "rejected":
        assert np.array_equal(got[2][0], host.pixels)  # Pillow's canvas, exactly
    else:
        assert np.array_equal(got[2][0], want[2][0])


def test_small_decode_and_resize_budgets_give_the_same_canvases(photos: list[Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunking a batch to bound device memory changes nothing in the result."""
    preprocess = Preprocessor(96)
    _, whole = _device_batch(photos, preprocess)
    calls: list[int] = []
    real_decode = device_decode.decode_jpeg

    def counting_decoder(data: list[torch.Tensor], **kwargs: object) -> list[torch.Tensor]:
        calls.append(len(data))
        return real_decode(data, **kwargs)

    monkeypatch.setattr(device_decode, "decode_jpeg", counting_decoder)
    monkeypatch.setattr(device_decode, "DECODE_PIXEL_BUDGET", 200_000)  # ~2 small photos a call
    monkeypatch.setattr(device_decode, "RESIZE_ELEMENT_BUDGET", 1)  # one image per resize
    _, chunked = _device_batch(photos, preprocess)
    assert len(calls) > 2 and sum(calls) == len(photos)
    a, b = _canvases(whole), _canvases(chunked)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[i][0], b[i][0]) for i in a)


def test_other_formats_are_decoded_on_the_host(tmp_path: Path) -> None:
    """PNG (RGB, palette, 16-bit, alpha), CMYK and progressive JPEGs: decoded by Pillow in
    the worker, exactly as without device decoding; a greyscale JPEG goes to the device."""
    photo = Image.open(sample_photos(1)[0]).convert("RGB")
    photo.save(tmp_path / "photo.png")
    photo.save(tmp_path / "progressive.jpg", quality=90, progressive=True)
    photo.convert("L").save(tmp_path / "grey.jpg", quality=90)
    host_routed = [tmp_path / "photo.png", write_palette_png(tmp_path / "palette.png", transparent=True),
                   write_gray16_png(tmp_path / "gray16.png"), write_rgba_png(tmp_path / "rgba.png"),
                   write_cmyk_jpeg(tmp_path / "cmyk.jpg"), tmp_path / "progressive.jpg"]
    paths = [*host_routed, tmp_path / "grey.jpg"]
    preprocess = Preprocessor(288)  # no draft scaling on the host for these small files
    raw, batch = _device_batch(paths, preprocess)
    host = _host(paths, preprocess)
    for d, h in zip(raw[:-1], host):
        assert d.jpeg is None and d.pixels is not None, paths[d.index].name
        assert np.array_equal(d.pixels, h.pixels) and d.format == h.format, paths[d.index].name
    assert raw[-1].jpeg is not None and raw[-1].pixels is None
    assert [d.format for d in host] == ["PNG"] * 4 + ["JPEG"] * 3
    device = _canvases(batch)
    assert sorted(device) == list(range(len(paths)))
    for h in host[:-1]:
        assert np.array_equal(device[h.index][0], h.pixels)
    _assert_close(device, host[-1:], "grey")
    grey = device[len(paths) - 1][0]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


# ---------------------------------------------------------------- choosing the path


def test_decode_mode_is_validated(make_engine) -> None:
    assert [check_decode_mode(m) for m in ("auto", "cpu", "device")] == ["auto", "cpu", "device"]
    with pytest.raises(UnknownNameError, match="unknown decode mode 'devcie'"):
        check_decode_mode("devcie")
    with pytest.raises(UnknownNameError, match="decode mode"):
        make_engine(decode="gpu")


def test_decodes_on_device_follows_the_rules() -> None:
    cuda = torch.device("cuda")  # only compared, never touched
    assert decodes_on_device("auto", cuda) and not decodes_on_device("auto", CPU)
    assert decodes_on_device("device", CPU) and decodes_on_device("device", cuda)
    assert not decodes_on_device("cpu", cuda) and not decodes_on_device("cpu", CPU)
    assert decodes_on_device("auto", cuda, "bilinear") and decodes_on_device("device", CPU, "nearest")
    # A filter with no torch equivalent: auto stays on the host, device refuses up front.
    assert not decodes_on_device("auto", cuda, "lanczos")
    with pytest.raises(UnknownNameError, match="lanczos"):
        decodes_on_device("device", CPU, "lanczos")
    with pytest.raises(UnknownNameError, match="decode mode"):
        decodes_on_device("GPU", cuda)
