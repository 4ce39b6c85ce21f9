"""The trainer: data, corruptions, triplet fine-tuning, the denoising autoencoder, checkpoints
as extractors, --denoise, and `retrieve eval`.

Models train at toy sizes (64-128 px canvases, a few dozen steps) on the 50 bundled
photos or on synthetic images, so the whole file runs in about a minute on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from retrieval import Engine, ExtractorMismatchError
from retrieval.options import EngineOptions
from retrieval.cli.app import app
from retrieval.errors import RetrievalError
from retrieval.evaluation.metrics import evaluate
from retrieval.extractors import ExtractorConfig, create_extractor, resolve_extractor
from retrieval.extractors.autoencoder import DenoisingAutoencoder
from retrieval.extractors.denoise import Denoiser, DenoisingExtractor
from retrieval.extractors.triplet import build_triplet_net
from retrieval.images.decode import load_image
from retrieval.training.autoencoder import AutoencoderSettings, train_autoencoder
from retrieval.extractors.checkpoint import MODEL_FILE, save_model
from retrieval.training.corruptions import CorruptionSettings, corrupt, corrupt_image
from retrieval.training.data import PKSampler
from retrieval.evaluation.labels import read_image_list, read_labelled
from retrieval.training.loop import EpochRecord
from retrieval.training.triplet import TripletSettings, train_triplet

runner = CliRunner()
SAMPLE = Path(__file__).resolve().parents[1] / "scripts" / "sample"

NOISE_ONLY = CorruptionSettings(noise_sigma=0.2, salt_pepper=0.0, jpeg_quality=100, blur_sigma=0.0)
TINY_AE = AutoencoderSettings(epochs=3, steps_per_epoch=25, width=8, levels=2, patch=32, batch_size=8,
                              image_size=64, corruptions=NOISE_ONLY, val_patches=48, lr=1e-2, workers=0,
                              device="cpu")


@pytest.fixture(autouse=True)
def one_thread() -> None:
    """Toy-sized tensors gain nothing from a second thread, and on a loaded machine the
    threads' synchronisation made these tests ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _photos(sample_dir: Path) -> list[Path]:
    return sorted(sample_dir.glob("*/*.jpg"))


def _sample_ap(vectors: np.ndarray, labels: list[str]) -> float:
    """Leave-one-out mAP by scikit-learn: the independent reference for `retrieve eval`."""
    metrics = pytest.importorskip("sklearn.metrics")
    aps = []
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if j != i]
        truth = np.array([labels[j] == labels[i] for j in others])
        if truth.any():
            aps.append(metrics.average_precision_score(truth, vectors[others].astype(np.float64) @ vectors[i]))
    return float(np.mean(aps))


def _stderr_line(result) -> str:  # noqa: ANN001 - click's Result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# ----------------------------------------------------------------------------- data


def test_folder_and_csv_give_the_same_labelled_set(sample_dir: Path, tmp_path: Path) -> None:
    from_folder = read_labelled(sample_dir)
    assert len(from_folder) == 50 and len(from_folder.classes) == 10
    listing = tmp_path / "lists" / "all.csv"
    listing.parent.mkdir()
    with open(listing, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])  # a header is skipped
        for path, label in zip(from_folder.paths, from_folder.labels):
            rel = Path("..") / Path(path).relative_to(tmp_path)  # relative to the list's folder
            w.writerow([rel, label] if label != "cup" else [rel])  # no label: the parent folder names it
    from_csv = read_labelled(listing)
    assert sorted(zip(from_csv.paths, from_csv.labels)) == sorted(zip(from_folder.paths, from_folder.labels))


def test_split_holds_out_part_of_every_class_and_repeats(sample_dir: Path) -> None:
    images = read_labelled(sample_dir)
    train, val = images.split(0.4, seed=3)
    assert len(train) == 30 and len(val) == 20
    assert all(val.labels.count(c) == 2 for c in images.classes)
    assert not set(train.paths) & set(val.paths)
    assert images.split(0.4, seed=3) == (train, val)
    assert images.split(0.4, seed=4)[1] != val


def test_pk_sampler_batches_p_classes_of_k_images() -> None:
    labels = [f"c{i % 6}" for i in range(60)] + ["lonely"]
    sampler = PKSampler(labels, classes_per_batch=4, per_class=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 60 // 12
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(batch) == 12 and len(set(classes)) == 4
        assert all(classes.count(c) == 3 for c in set(classes)) and "lonely" not in classes
    assert list(sampler) == batches  # same epoch, same batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


@pytest.mark.parametrize("case", ["empty folder", "one class", "missing csv path", "no such path"])
def test_bad_training_data_is_one_line_and_exit_2(case: str, tmp_path: Path, sample_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if case == "one class":
        shutil.copytree(sample_dir / "cup", data / "cup")
    elif case == "missing csv path":
        data = tmp_path / "list.csv"
        data.write_text(f"{_photos(sample_dir)[0]},a\n{tmp_path / 'gone.jpg'},b\n")
    elif case == "no such path":
        data = tmp_path / "nowhere"
    result = runner.invoke(app, ["train", "triplet", str(data), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2, result.output
    line = _stderr_line(result)
    expected = {"empty folder": "no images", "one class": "at least 2 classes", "missing csv path": "do not exist",
                "no such path": "not found"}[case]
    assert expected in line
    assert not (tmp_path / "out" / MODEL_FILE).exists()
    result = runner.invoke(app, ["train", "autoencoder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ae")])
    assert result.exit_code == 2 and "not found" in _stderr_line(result)


# ----------------------------------------------------------------------------- corruptions


def test_corruptions_have_the_stated_statistics() -> None:
    gen = torch.Generator().manual_seed(0)
    grey = torch.full((4, 3, 64, 64), 0.5)
    noisy = corrupt(grey, "gaussian", 0.1, gen)
    assert float((noisy - grey).std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float((noisy - grey).mean())) < 0.005

    sp = corrupt(grey, "salt_pepper", 0.05, gen)
    changed = (sp != grey).any(dim=1)  # a pixel changes in all channels at once
    assert float(changed.float().mean()) == pytest.approx(0.05, rel=0.1)
    assert bool(((sp == 0) | (sp == 1)).all(dim=1)[changed].all())
    assert float((sp == 1).all(dim=1).float().mean()) == pytest.approx(0.025, rel=0.15)  # half salt

    image = torch.rand((1, 3, 64, 64), generator=gen)
    errors = [float((corrupt(image, "jpeg", q) - image).abs().mean()) for q in (90, 40, 10)]
    assert errors == sorted(errors) and errors[0] > 0  # lower quality, larger error
    blurred = corrupt(image, "blur", 1.5)
    assert blurred.shape == image.shape and float(blurred.std()) < 0.5 * float(image.std())  # noise smoothed away
    for kind in ("gaussian", "salt_pepper", "blur"):
        assert torch.equal(corrupt(image, kind, 0.0, gen), image)

    img = Image.new("RGB", (40, 30), (120, 60, 200))
    assert corrupt_image(img, "gaussian", 0.2, seed=1).size == (40, 30)
    assert np.array_equal(np.asarray(corrupt_image(img, "gaussian", 0.2, seed=1)),
                          np.asarray(corrupt_image(img, "gaussian", 0.2, seed=1)))
    with pytest.raises(RetrievalError, match="turned off"):
        CorruptionSettings(0.0, 0.0, 100, 0.0)


# ----------------------------------------------------------------------------- checkpoints as extractors


def _triplet_checkpoint(folder: Path, seed: int, image_size: int = 96) -> Path:
    """An untrained triplet checkpoint with a random head: enough to test the plumbing."""
    model = {"backbone": "tf_efficientnet_lite0", "backbone_weights": None, "pooling": "gem", "gem_p": 3.0,
             "dim": 64, "frozen_stages": 7}
    net, _ = build_triplet_net(model, image_size)
    torch.manual_seed(seed)
    torch.nn.init.normal_(net.head.weight, std=0.05)
    save_model(folder, net.state_dict(), {
        "kind": "triplet", "model": model,
        "extractor": {"backbone": "tf_efficientnet_lite0", "pooling": "gem", "gem_p": 3.0,
                      "image_size": image_size, "resize": "letterbox"}})
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return _triplet_checkpoint(root / "a", seed=1), _triplet_checkpoint(root / "b", seed=2)


def test_checkpoint_round_trip_gives_identical_embeddings(checkpoints: tuple[Path, Path], tmp_path: Path,
                                                          sample_dir: Path) -> None:
    a, _ = checkpoints
    model = json.loads((a / "config.json").read_text())["model"]
    net, _ = build_triplet_net(model, 96)
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(a / MODEL_FILE)))
    extractor = create_extractor(resolve_extractor(a), "cpu")
    images = [load_image(p).image for p in _photos(sample_dir)[:4]]
    prepared = [extractor.preprocessor(im) for im in images]
    pixels = torch.from_numpy(np.stack([p[0] for p in prepared]))
    hs, ws = torch.tensor([p[1] for p in prepared]), torch.tensor([p[2] for p in prepared])
    with torch.no_grad():
        direct = net.eval()(pixels, hs, ws).numpy()
    np.testing.assert_array_equal(extractor.embed_images(images), direct)
    assert extractor.dim == 64 and extractor.manifest.config.kind == "triplet"

    moved = shutil.copytree(a, tmp_path / "moved")  # same weights elsewhere: same identity
    again = create_extractor(resolve_extractor(moved / MODEL_FILE), "cpu")
    assert again.manifest.identity() == extractor.manifest.identity()
    np.testing.assert_array_equal(again.embed_images(images), direct)


def test_index_with_a_checkpoint_then_query_and_refuse_another(checkpoints: tuple[Path, Path], tmp_path: Path,
                                                               sample_dir: Path) -> None:
    a, b = checkpoints
    bundle = tmp_path / "bundle"
    folders = [str(sample_dir / "cup"), str(sample_dir / "chair")]
    res = runner.invoke(app, ["index", *folders, "-i", str(bundle), "--extractor", str(a), "--json", "-q",
                              "--device", "cpu", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 10
    info = json.loads(runner.invoke(app, ["info", "-i", str(bundle), "--json"]).stdout)
    assert (info["extractor"]["kind"], info["dim"]) == ("triplet", 64)

    query = str(sorted((sample_dir / "cup").glob("*.jpg"))[0])
    res = runner.invoke(app, ["query", query, "-i", str(bundle), "-k", "3", "--json"])  # re-opens with the manifest
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["results"]) == 3

    for cmd in (["query", query], ["index", *folders]):
        res = runner.invoke(app, [*cmd, "-i", str(bundle), "--extractor", str(b), "--device", "cpu"])
        assert res.exit_code == 2, res.output
        assert "differs from the one this index was built with" in _stderr_line(res)
    with pytest.raises(ExtractorMismatchError):
        Engine.create(bundle, b, exist_ok=True, options=EngineOptions(device="cpu"))
    with Engine.create(bundle, a, exist_ok=True, options=EngineOptions(device="cpu", workers=0)) as engine:  # the same one: fine
        assert len(engine) == 10


# ----------------------------------------------------------------------------- triplet training


@pytest.fixture()
def red_or_blue(tmp_path: Path, sample_dir: Path) -> Path:
    """Two classes the off-the-shelf model cannot tell apart: every photo appears in both,
    once with a red and once with a blue square in its corner. Its nearest neighbour is
    its own twin of the other class; a model trained on the labels must learn the colour."""
    root = tmp_path / "red-or-blue"
    for i, path in enumerate(_photos(sample_dir)):
        image = load_image(path).image
        image.thumbnail((120, 120))
        for name, colour in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
            marked = image.copy()
            side = min(marked.size) // 2
            ImageDraw.Draw(marked).rectangle([0, 0, side, side], fill=colour)
            (root / name).mkdir(parents=True, exist_ok=True)
            marked.save(root / name / f"{i:02d}.png")
    return root


def test_triplet_training_learns_what_the_labels_mean(red_or_blue: Path, tmp_path: Path) -> None:
    settings = TripletSettings(epochs=4, image_size=96, embed_size=96, cache_views=2, val_fraction=0.2,
                               classes_per_batch=2, per_class=8, lr=1e-3, head_lr=1e-3, workers=0, device="cpu")
    epochs_seen: list[int] = []
    result = train_triplet(red_or_blue, tmp_path / "t", settings, on_epoch=lambda r: epochs_seen.append(r.epoch))
    assert epochs_seen == [0, 1, 2, 3, 4] and [r.epoch for r in result.history] == epochs_seen
    assert result.initial_score < 0.65  # about chance: the twins rank first
    assert result.best_score > result.initial_score + 0.1 and result.best_epoch > 0

    # the checkpoint embeds the held-out images as validation saw them
    _, val = read_labelled(red_or_blue).split(settings.val_fraction, settings.seed)
    pictures = [load_image(p).image for p in val.paths]
    ids = list(range(len(pictures)))
    trained = create_extractor(resolve_extractor(tmp_path / "t"), "cpu").embed_images(pictures)
    assert evaluate(trained, val.labels, trained, val.labels, query_ids=ids, gallery_ids=ids).map == \
        pytest.approx(result.best_score, abs=0.02)

    saved = json.loads((tmp_path / "t" / "config.json").read_text())
    assert saved["training"]["epochs"] == 4 and saved["training"]["settings"]["mining"] == "semihard"
    with pytest.raises(RetrievalError, match="already holds a checkpoint"):
        train_triplet(red_or_blue, tmp_path / "t", settings)
    with pytest.raises(RetrievalError, match="other settings"):
        train_triplet(red_or_blue, tmp_path / "t", replace(settings, margin=0.3), resume=True)


# ----------------------------------------------------------------------------- the autoencoder


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny denoiser trained on the sample photos against Gaussian noise."""
    out = tmp_path_factory.mktemp("ae") / "model"
    images = [str(p) for p in _photos(SAMPLE)]
    train_autoencoder(images, out, TINY_AE)
    return out


def test_autoencoder_reduces_the_error_of_corrupted_input(autoencoder: Path) -> None:
    training = json.loads((autoencoder / "config.json").read_text())["training"]
    assert training["initial_score"] == pytest.approx(json.loads((autoencoder / "config.json").read_text())
                                                      ["data"]["corrupted_psnr"], abs=1e-3)  # starts as identity
    assert training["best_score"] > training["initial_score"] + 2.0  # dB of PSNR on held-out patches
    model = Denoiser(autoencoder).model
    gen = torch.Generator().manual_seed(5)
    x = torch.linspace(0, 1, 48).view(1, 1, 1, 48).expand(2, 3, 48, 48).contiguous()  # a smooth ramp
    noisy = corrupt(x, "gaussian", 0.2, gen)
    with torch.no_grad():
        cleaned = model(noisy).clamp(0, 1)
    assert float((cleaned - x).pow(2).mean()) < 0.7 * float((noisy - x).pow(2).mean())


def test_resume_continues_from_the_saved_epoch_exactly(tmp_path: Path, sample_dir: Path) -> None:
    images = [str(p) for p in _photos(sample_dir)[:12]]
    short = replace(TINY_AE, epochs=3, steps_per_epoch=5)
    straight = train_autoencoder(images, tmp_path / "straight", short)

    def interrupt_after_1(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise KeyboardInterrupt  # as if Ctrl-C came during epoch 2

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(images, tmp_path / "resumed", short, on_epoch=interrupt_after_1)
    seen: list[int] = []
    resumed = train_autoencoder(images, tmp_path / "resumed", short, resume=True,
                                on_epoch=lambda r: seen.append(r.epoch))
    assert seen == [2, 3]  # only the missing epochs ran
    assert [r.epoch for r in resumed.history] == [0, 1, 2, 3]
    assert [r.score for r in resumed.history] == pytest.approx([r.score for r in straight.history], abs=1e-6)
    res = runner.invoke(app, ["train", "autoencoder", str(sample_dir), "--out", str(tmp_path / "none"), "--resume"])
    assert res.exit_code == 2 and "nothing to resume" in _stderr_line(res)


def test_denoise_moves_noisy_embeddings_towards_the_clean_ones(autoencoder: Path, sample_dir: Path,
                                                               tmp_path: Path) -> None:
    extractor = create_extractor(ExtractorConfig(image_size=64), "cpu")
    denoising = DenoisingExtractor(extractor, Denoiser(autoencoder))
    clean = [load_image(p).image.resize((64, 48)) for p in _photos(sample_dir)[::5]]
    noisy = [corrupt_image(im, "gaussian", 0.2, seed=i) for i, im in enumerate(clean)]
    c, n, d = extractor.embed_images(clean), extractor.embed_images(noisy), denoising.embed_images(noisy)
    assert float((d * c).sum(1).mean()) > float((n * c).sum(1).mean()) + 0.01

    with Engine.create(tmp_path / "b", extractor, options=EngineOptions(device="cpu", workers=0, denoise=autoencoder,
                                                                          denoise_at="query")) as engine:
        assert engine.embedder("index") is extractor
        np.testing.assert_allclose(engine.embed(noisy[0]), d[0], atol=1e-5)
        engine.add([str(p) for p in _photos(sample_dir)[:5]])
        res = runner.invoke(app, ["query", str(_photos(sample_dir)[7]), "-i", str(engine.path), "--denoise",
                                  str(autoencoder), "--json", "-k", "2"])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["query", str(_photos(sample_dir)[7]), "-i", str(engine.path), "--denoise",
                              str(tmp_path / "b")])
    assert res.exit_code == 2 and "no trained checkpoint" in _stderr_line(res)


def test_autoencoder_code_is_an_extractor(autoencoder: Path, sample_dir: Path) -> None:
    ae = create_extractor(resolve_extractor(autoencoder), "cpu")
    assert ae.manifest.config.kind == "autoencoder" and ae.dim == TINY_AE.width * 2 ** (TINY_AE.levels - 1)
    vecs = ae.embed_images([load_image(p).image for p in _photos(sample_dir)[:3]])
    assert vecs.shape == (3, ae.dim) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    shape = DenoisingAutoencoder(8, 2)(torch.rand(1, 3, 37, 50)).shape  # any size, padded inside
    assert shape == (1, 3, 37, 50)


# ----------------------------------------------------------------------------- retrieve eval


@pytest.fixture(scope="module")
def indexed_sample(tmp_path_factory: pytest.TempPathFactory,
                   extractor) -> tuple[Path, Path, np.ndarray, list[str], list[str]]:  # noqa: ANN001
    """A bundle of the 50 photos (shared warm model), the photos' folder, their vectors,
    labels and paths; built once for the eval tests, which only read it."""
    root = tmp_path_factory.mktemp("eval")
    photos = shutil.copytree(SAMPLE, root / "photos", ignore=shutil.ignore_patterns("*.md"))
    with Engine.create(root / "bundle", extractor, options=EngineOptions(device="cpu", workers=0)) as engine:
        engine.index([photos])
        paths = [str(p) for p in _photos(photos)]
        rows = engine.catalog.rows_by_path(paths)
        vectors = engine.vectors([rows[p].id for p in paths])
    return root / "bundle", photos, vectors, [Path(p).parent.name for p in paths], paths


def test_eval_on_a_labelled_folder_matches_sklearn(indexed_sample) -> None:  # noqa: ANN001
    bundle, sample_dir, vectors, labels, _ = indexed_sample
    res = runner.invoke(app, ["eval", str(sample_dir), "-i", str(bundle), "--json", "-k", "1", "-k", "4"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["leave_one_out"] and (got["gallery"], got["queries_scored"]) == (50, 50)
    assert got["map"] == pytest.approx(_sample_ap(vectors, labels), abs=1e-5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top4 = np.argsort(-sims, axis=1)[:, :4]
    hits = np.array([[labels[j] == labels[i] for j in row] for i, row in enumerate(top4)])
    assert got["precision_at"]["4"] == pytest.approx(hits.mean(), abs=1e-6)
    assert got["recall_at"]["4"] == pytest.approx((hits.sum(1) / 4).mean(), abs=1e-6)  # 4 relevant per query

    table = runner.invoke(app, ["eval", str(sample_dir), "-i", str(bundle)])
    assert table.exit_code == 0 and "mAP" in table.stdout and "P@10" in table.stdout


def test_eval_with_query_and_gallery_lists(indexed_sample, tmp_path: Path, extractor) -> None:  # noqa: ANN001
    bundle, _, vectors, labels, paths = indexed_sample
    queries, gallery = paths[::5], [p for i, p in enumerate(paths) if i % 5]
    (tmp_path / "q.txt").write_text("\n".join(queries))  # labels from the parent folders
    (tmp_path / "g.csv").write_text("path,label\n" + "\n".join(f"{p},{Path(p).parent.name}" for p in gallery))
    res = runner.invoke(app, ["eval", "--queries", str(tmp_path / "q.txt"), "--gallery", str(tmp_path / "g.csv"),
                              "-i", str(bundle), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert (got["queries"], got["gallery"], got["leave_one_out"]) == (10, 40, False)  # only the listed gallery
    q = read_image_list(tmp_path / "q.txt")
    q_vecs = extractor.embed_images([load_image(p).image for p in q.paths])
    g_pos = [paths.index(p) for p in gallery]
    expected = evaluate(q_vecs, q.labels, vectors[g_pos], [labels[i] for i in g_pos]).map
    assert got["map"] == pytest.approx(expected, abs=1e-4)

    res = runner.invoke(app, ["eval", "--queries", str(tmp_path / "q.txt")])
    assert res.exit_code == 2 and "--gallery" in _stderr_line(res)
