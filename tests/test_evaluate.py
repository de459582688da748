"""Tests for diffusion.evaluate: Frechet distance, near copies, the classifier, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion import ContextUnet, Schedule, SpritePipeline, UnetConfig, render
from diffusion.data import SpriteDataset, load_dataset
from diffusion.evaluate import (
    COPY_MAX_SHARE,
    UNCERTAIN,
    balanced_indices,
    colours_per_sprite,
    compare,
    evaluate,
    evaluate_palettes,
    flat_pair_share,
    format_report,
    frechet_distance,
    load_or_train_classifier,
    main,
    near_copies,
    palette_distance,
    train_classifier,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LABELS = ["red", "blue", "green"]


# --- Frechet distance ------------------------------------------------------------------------


def gaussian_sample(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean and (n-1)-normalised covariance are exactly mean and cov."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T  # sample covariance = identity
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_matches_closed_form_for_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    sd1, sd2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    x = gaussian_sample(mu1, np.diag(sd1**2), 500, seed=0)
    y = gaussian_sample(mu2, np.diag(sd2**2), 300, seed=1)
    # For diagonal covariances tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sd1 - sd2)^2.
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((sd1 - sd2) ** 2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(y, x) == pytest.approx(expected, rel=1e-9)


def test_frechet_matches_closed_form_for_correlated_gaussians() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    cov1, cov2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.standard_normal(4), rng.standard_normal(4)
    # S1 S2 is similar to a PSD matrix, so tr((S1 S2)^1/2) is the sum of its eigenvalue roots.
    cross = np.sqrt(np.linalg.eigvals(cov1 @ cov2).real).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * cross
    x, y = gaussian_sample(mu1, cov1, 200, 3), gaussian_sample(mu2, cov2, 200, 4)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_frechet_with_fewer_sprites_than_features_matches_the_covariance_formula() -> None:
    # A bootstrap of a few sprites against sparse pattern histograms: rank-deficient covariances,
    # many features zero in every sprite, and both sides shorter than the feature count.
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal((12, 40)) - 1.0, 0)
    y = np.maximum(rng.standard_normal((9, 40)) - 0.8, 0)
    x[:, :15] = y[:, :15] = 0
    cov1, cov2 = np.cov(x.T), np.cov(y.T)
    cross = np.sqrt(np.linalg.eigvals(cov1 @ cov2).real.clip(min=0)).sum()
    mean = np.sum((x.mean(0) - y.mean(0)) ** 2)
    expected = mean + np.trace(cov1) + np.trace(cov2) - 2 * cross
    assert expected > mean + 0.1  # the covariance terms count
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(y, x) == pytest.approx(expected, rel=1e-6)


def test_frechet_of_identical_and_shifted_sets() -> None:
    x = np.random.default_rng(0).standard_normal((300, 16))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    shift = np.arange(16) / 4
    # Shifting one set only moves its mean.
    assert frechet_distance(x, x + shift) == pytest.approx(np.sum(shift**2), rel=1e-9)
    assert frechet_distance(torch.from_numpy(x), x + shift) == pytest.approx(np.sum(shift**2))


def test_frechet_rejects_mismatched_features() -> None:
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# --- crispness -------------------------------------------------------------------------------


def test_crispness_of_known_images() -> None:
    flat = np.full((1, 8, 8, 3), 90, np.uint8)
    assert colours_per_sprite(flat).tolist() == [1]
    assert flat_pair_share(flat).tolist() == [1.0]
    # A checkerboard of two far colours: 2 colours, no flat pair.
    checker = np.where((np.indices((8, 8)).sum(0) % 2 == 0)[..., None], 0, 255)
    checker = checker.astype(np.uint8).repeat(3, -1)[None]
    assert colours_per_sprite(checker).tolist() == [2]
    assert flat_pair_share(checker).tolist() == [0.0]
    # Left half and right half: 8 of the 112 neighbour pairs cross the edge.
    halves = flat.copy()
    halves[:, :, 4:] = 200
    assert flat_pair_share(halves)[0] == pytest.approx(104 / 112)
    # Speckle within the tolerance merges into one colour and stays flat.
    speckled = flat + np.random.default_rng(0).integers(0, 6, flat.shape).astype(np.uint8)
    assert colours_per_sprite(speckled).tolist() == [1]
    assert flat_pair_share(speckled).tolist() == [1.0]
    assert colours_per_sprite(speckled, tolerance=0)[0] > 10


def test_palette_distance() -> None:
    palette = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[1] = (3, 4, 0)  # 5 away from black
    assert palette_distance(images, palette).tolist() == pytest.approx([0.0, 5.0])


def test_crispness_report_and_seed_means(tmp_path: Path) -> None:
    data = synthetic_sprites(n_per_label=20)
    train, _ = data.split(holdout=0.2, seed=0)

    class NoisyCopies:
        """Training sprites of the requested label with speckle: crisp data made noisy."""

        labels, resolution = LABELS, 8
        palette = None

        def generate(self, context: str, n: int, seed: int = 0, **_: object) -> np.ndarray:
            rng = np.random.default_rng(seed)
            sprites = train.images[train.labels == LABELS.index(context)][:n].astype(int)
            return np.clip(sprites + rng.integers(-20, 21, sprites.shape), 0, 255).astype(np.uint8)

    pipe = NoisyCopies()
    reports = evaluate_palettes(
        pipe, data, [None, 3], n_per_label=8, seed=[0, 1], cache_dir=tmp_path
    )
    raw, reduced = reports["raw"], reports["3"]
    crisp = raw["crispness"]
    assert crisp["colours_per_sprite"]["real_heldout"] <= 3  # the synthetic sprites are flat
    assert crisp["colours_per_sprite"]["ratio"] > 3  # speckle makes many colours
    assert crisp["flat_pairs"]["ratio"] < 0.5
    assert crisp["palette_distance"]["generated"] > 5
    assert reduced["crispness"]["colours_per_sprite"]["generated"] <= 3
    assert reduced["crispness"]["flat_pairs"]["ratio"] > crisp["flat_pairs"]["ratio"]
    # Two seeds: the report is their mean, and each seed's headline figures are kept.
    assert raw["seed"] == [0, 1] and set(raw["per_seed"]) == {"0", "1"}
    per_seed = [raw["per_seed"][s]["frechet_ratio"] for s in ("0", "1")]
    assert raw["frechet_distance"]["ratio"] == pytest.approx(np.mean(per_seed))
    single = evaluate(pipe, data, n_per_label=8, seed=1, cache_dir=tmp_path)
    assert single["frechet_distance"]["ratio"] == pytest.approx(per_seed[1])
    assert "colours per sprite" in format_report(raw) and "per seed" in format_report(raw)
    floored = format_report({**raw, "guidance": 2.0, "guidance_sigma_min": 1.0})
    assert "guidance 2.0 above noise level sigma 1, " in floored
    assert "guidance 2.0, " in format_report({**raw, "guidance": 2.0, "guidance_sigma_min": 0.0})


# --- near copies -----------------------------------------------------------------------------


def test_near_copies() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    max_changed = int(COPY_MAX_SHARE * 16 * 16)  # 12 pixels of 256

    def changed(img: np.ndarray, n_pixels: int) -> np.ndarray:
        out = img.copy().reshape(-1, 3)
        out[:n_pixels] = 255 - out[:n_pixels] // 2 - 64  # every channel moves far (>= 64)
        return out.reshape(img.shape)

    faint = np.clip(reference[3].astype(int) + rng.integers(-20, 21, (16, 16, 3)), 0, 255)
    candidates = np.stack(
        [
            reference[0],  # exact copy
            reference[1][:, ::-1],  # mirror image
            faint.astype(np.uint8),  # every pixel off by at most 20
            changed(reference[4], max_changed),  # at the limit
            changed(reference[5], max_changed + 1),  # just past it
            rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),  # noise
            np.full((16, 16, 3), 255, np.uint8),  # blank
        ]
    )
    np.testing.assert_array_equal(
        near_copies(candidates, reference), [True, True, True, True, False, False, False]
    )


def test_near_copies_rejects_other_sizes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        near_copies(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 16, 16, 3), np.uint8))


# --- helpers ---------------------------------------------------------------------------------


def test_balanced_indices() -> None:
    labels = np.array([0] * 10 + [1] * 2 + [2] * 5)
    idx = balanced_indices(labels, 4, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(labels[idx], [0] * 4 + [1] * 4 + [2] * 4)
    assert len(set(idx[:4])) == 4  # enough examples: drawn without replacement
    assert set(idx[4:8]) <= {10, 11}  # too few: drawn with replacement
    with pytest.raises(ValueError, match="label 2 has no examples"):
        balanced_indices(labels[:12], 4, 3, np.random.default_rng(0))


# --- the classifier --------------------------------------------------------------------------


def test_classifier_learns_dawnlike16() -> None:
    folder = SHARED_DATA / "dawnlike16"
    if not folder.is_dir():
        pytest.skip(f"shared dataset {folder} is not available")
    train, held = load_dataset(folder).split(holdout=0.2, seed=0)
    # 80 sprites a label and 4 epochs (the real classifier: all 2,882 and 12) keep the test
    # at a few seconds; it still learns.
    rng = np.random.default_rng(0)
    train = train.subset(balanced_indices(train.labels, 80, train.num_labels, rng))
    model = train_classifier(train, epochs=4)
    _, pred = model.embed(held.images)
    per_label = [np.mean(pred[held.labels == k] == k) for k in range(held.num_labels)]
    assert np.mean(per_label) > 0.6, per_label  # chance is 1/6


# --- evaluate on a tiny synthetic dataset and model ------------------------------------------


def synthetic_sprites(n_per_label: int = 40, seed: int = 0) -> SpriteDataset:
    """8x8 sprites on white: a red square, a blue bar or a green cross at random places."""
    rng = np.random.default_rng(seed)
    images = np.full((3 * n_per_label, 8, 8, 3), 255, np.uint8)
    colours = np.array([[200, 30, 30], [30, 30, 200], [30, 160, 30]], np.uint8)
    for i in range(len(images)):
        label, (r, c) = i // n_per_label, rng.integers(1, 5, 2)
        shade = colours[label] + rng.integers(0, 40, 3).astype(np.uint8)
        if label == 0:
            images[i, r : r + 3, c : c + 3] = shade
        elif label == 1:
            images[i, r, 1:7] = shade
        else:
            images[i, r : r + 3, c + 1] = shade
            images[i, r + 1, c : c + 3] = shade
    labels = np.repeat(np.arange(3), n_per_label)
    return SpriteDataset(images, labels, list(LABELS), "synthetic")


def tiny_pipeline(labels: list[str] = LABELS) -> SpritePipeline:
    """An untrained 8x8 model: its samples are noise, whatever the label."""
    torch.manual_seed(0)
    config = UnetConfig(num_labels=len(labels), resolution=8, channels=(8, 16), emb_dim=16, T=50)
    return SpritePipeline(ContextUnet(config), Schedule.linear(T=50), labels, device="cpu")


def test_evaluate_random_model(tmp_path: Path) -> None:
    data = synthetic_sprites()
    report = evaluate(
        tiny_pipeline(), data, n_per_label=30, sampler="ddim", steps=4, seed=0, cache_dir=tmp_path
    )

    acc, fd, copies = report["label_accuracy"], report["frechet_distance"], report["near_copy_rate"]
    assert acc["real_heldout"] >= 0.9  # the toy classes are easy
    assert acc["chance"] == pytest.approx(1 / 3)
    assert abs(acc["generated"] - 1 / 3) <= 0.2  # noise carries no label
    assert fd["ratio"] > 10
    assert fd["generated"] > fd["real_floor"] > 0
    assert copies["generated"] == 0.0
    assert report["per_label"].keys() == set(LABELS)
    assert (report["sampler"], report["steps"], report["n_per_label"]) == ("ddim", 4, 30)
    assert report["guidance"] == 1.0  # the pipeline's default, named in the report
    assert Path(report["classifier"]).parent == tmp_path
    json.dumps(report, allow_nan=False)  # must be valid JSON

    table = format_report(report)
    assert "Frechet distance" in table and "green" in table
    assert f"{fd['generated']:.3f}" in table

    # The cached classifier is reused: same file, same numbers.
    mtime = Path(report["classifier"]).stat().st_mtime_ns
    again = evaluate(
        tiny_pipeline(), data, n_per_label=30, sampler="ddim", steps=4, seed=0, cache_dir=tmp_path
    )
    assert Path(again["classifier"]).stat().st_mtime_ns == mtime
    assert again["frechet_distance"] == fd and again["label_accuracy"] == acc


def test_evaluate_counts_copies_of_training_sprites(tmp_path: Path) -> None:
    data = synthetic_sprites()
    train, _ = data.split(holdout=0.2, seed=0)

    class CopyingPipeline:
        """Returns training sprites of the requested label: a perfectly memorising model."""

        labels, resolution = LABELS, 8

        def generate(self, context: str, n: int, **_: object) -> np.ndarray:
            return train.images[train.labels == LABELS.index(context)][:n]

    report = evaluate(CopyingPipeline(), data, n_per_label=20, cache_dir=tmp_path)
    assert report["near_copy_rate"]["generated"] == 1.0
    assert report["label_accuracy"]["generated"] >= 0.9
    assert report["frechet_distance"]["ratio"] < 3


def test_evaluate_names_the_label_a_model_memorises(tmp_path: Path) -> None:
    # Sprites of random pixels: no held-out sprite is a near copy of a training one, so any
    # copy a model makes is beyond what real sprites allow.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8, 3), dtype=np.uint8)
    data = SpriteDataset(images, np.repeat(np.arange(3), 20), list(LABELS), "noise")
    train, _ = data.split(holdout=0.2, seed=0)

    class CopiesGreen:
        labels, resolution = LABELS, 8

        def generate(self, context: str, n: int, seed: int = 0, **_: object) -> np.ndarray:
            if context == "green":
                return train.images[train.labels == 2][np.arange(n) % 16]
            noise = np.random.default_rng([seed, len(context)])
            return noise.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)

    report = evaluate(CopiesGreen(), data, n_per_label=10, seed=[0, 1], cache_dir=tmp_path)
    copies = report["near_copy_rate"]
    assert copies["real_heldout"] == 0 and copies["memorised"] == ["green"]
    assert "MEMORISING" in format_report(report) and "green" in format_report(report)


def test_uncertain_figures_rank_copies_above_noise(tmp_path: Path) -> None:
    data = synthetic_sprites()
    train, _ = data.split(holdout=0.2, seed=0)

    class CopyingPipeline:
        labels, resolution = LABELS, 8

        def generate(self, context: str, n: int, seed: int = 0, **_: object) -> np.ndarray:
            own = train.images[train.labels == LABELS.index(context)]
            return own[np.random.default_rng(seed).permutation(len(own))[:n]]

    copies = evaluate(CopyingPipeline(), data, n_per_label=20, seed=[0, 1], cache_dir=tmp_path)
    noise = evaluate(
        tiny_pipeline(),
        data,
        n_per_label=20,
        sampler="ddim",
        steps=4,
        seed=[0, 1],
        cache_dir=tmp_path,
    )
    for report in (copies, noise):
        for metric in UNCERTAIN:
            block = report[metric]
            for figure in ("generated", "real_floor"):
                low, high = block["ci95"][figure]
                assert low <= block[figure] <= high and block["se"][figure] >= 0, (metric, block)
    # Training sprites are real sprites: every figure sits at its floor; noise is far above it.
    c2st = copies["c2st_accuracy"]
    assert c2st["per_side"] == 3 * 8  # every label has 8 held-out sprites
    assert abs(c2st["generated"] - c2st["real_floor"]) < 0.2
    assert noise["c2st_accuracy"]["generated"] > 0.9
    for metric in UNCERTAIN:
        assert compare(copies, noise, metric)["better"] == "a", compare(copies, noise, metric)
    # Every toy sprite is one flat shape on white: all have the same patterns, a floor of 0.
    patterns = noise["frechet_distance_patterns"]
    assert patterns["real_floor"] == 0.0 and patterns["ratio"] is None
    assert patterns["ci95"]["generated"][0] > 0
    assert copies["kid_patterns"]["generated"] < 0.2 * noise["kid_patterns"]["generated"]
    assert noise["frechet_distance"]["ci95"]["ratio"][0] > 1
    per_seed = [noise["per_seed"][s]["c2st_accuracy"] for s in ("0", "1")]
    assert noise["c2st_accuracy"]["generated"] == pytest.approx(np.mean(per_seed))
    table = format_report(noise)
    assert "C2ST accuracy" in table and "pattern KID" in table
    assert f"{noise['kid_patterns']['generated']:.3f}" in table
    json.dumps(noise, allow_nan=False)


def test_classifier_cache_is_keyed_by_data(tmp_path: Path) -> None:
    data = synthetic_sprites(n_per_label=10)
    _, path = load_or_train_classifier(data, tmp_path)
    _, same = load_or_train_classifier(synthetic_sprites(n_per_label=10), tmp_path)
    _, other = load_or_train_classifier(synthetic_sprites(n_per_label=10, seed=1), tmp_path)
    assert same == path and other != path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name])


def test_evaluate_rejects_mismatched_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        evaluate(tiny_pipeline(["a", "b", "c"]), synthetic_sprites(), cache_dir=tmp_path)


def test_evaluate_needs_held_out_sprites_of_every_label(tmp_path: Path) -> None:
    data = synthetic_sprites()
    keep = np.flatnonzero(data.labels != 2)[:-1]  # red and blue, then a single green sprite
    lone_green = data.subset(np.append(keep, len(data) - 1))
    with pytest.raises(ValueError, match="'green' has too few sprites"):
        evaluate(tiny_pipeline(), lone_green, cache_dir=tmp_path)


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One classifier cache for the command-line tests: their data is the same, so the second
    one reuses the first one's classifier instead of training its own."""
    return tmp_path_factory.mktemp("classifier-cache")


def cli_args(tmp_path: Path, cache: Path) -> list[str]:
    """The command line of a small evaluation: a tiny model and synthetic data, saved."""
    data = synthetic_sprites(n_per_label=20)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    np.save(data_dir / "images.npy", data.images)
    np.save(data_dir / "labels.npy", np.eye(3, dtype=np.float32)[data.labels])
    (data_dir / "meta.json").write_text(json.dumps({"label_names": LABELS}))
    tiny_pipeline().save_pretrained(tmp_path / "model")
    args = [str(tmp_path / "model"), "--data", str(data_dir), "--n", "8", "--steps", "3"]
    args += ["--sampler", "euler_ancestral", "--guidance", "2", "--seed", "5"]
    return [*args, "--cache", str(cache)]


def test_cli_writes_json(
    tmp_path: Path, classifier_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    assert main([*cli_args(tmp_path, classifier_cache), "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    assert report["model"] == str(tmp_path / "model")
    assert (report["sampler"], report["steps"], report["guidance"], report["seed"]) == (
        "euler_ancestral",
        3,
        2.0,
        5,
    )
    assert report["n_per_label"] == 8
    assert "near-copy rate" in capsys.readouterr().out


def test_cli_against_a_report_says_which_model_is_better(
    tmp_path: Path, classifier_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args(tmp_path, classifier_cache)
    assert main([*args, "--json", str(tmp_path / "report.json")]) == 0
    baseline = json.loads((tmp_path / "report.json").read_text())
    # The same model and seed measure the same, but for a critic that found the baseline's
    # sprites far harder to tell from real ones.
    baseline["c2st_accuracy"]["generated"] -= 0.3
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    capsys.readouterr()
    assert main([*args, "--against", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    lines = lines[lines.index(f"against {path} (95%; lower is better; z < 0: this model lower)") :]
    verdicts = {line.split()[0]: line for line in lines[2:]}
    assert verdicts["c2st_accuracy"].endswith(str(path))
    assert verdicts["kid_patterns"].endswith("within the noise") and "z  +0.00" in verdicts["kid"]
    # Another count per label is refused before any sampling, naming the flag.
    with pytest.raises(SystemExit):
        main([*args, "--n", "9", "--against", str(tmp_path / "baseline.json")])
    assert "--against" in capsys.readouterr().err


def test_the_critic_names_the_label_that_gives_itself_away(tmp_path: Path) -> None:
    data = synthetic_sprites(n_per_label=40)
    train, _ = data.split(holdout=0.2, seed=0)

    class SpeckledReds:
        """Training sprites, the first label's with a black speck on every other pixel."""

        labels, resolution = LABELS, 8
        palette = None

        def generate(self, context: str, n: int, seed: int = 0, **_: object) -> np.ndarray:
            images = train.images[train.labels == LABELS.index(context)][:n].copy()
            if context == LABELS[0]:
                images[:, ::2, ::2] = 0
            return images

    report = evaluate(SpeckledReds(), data, n_per_label=8, seed=0, cache_dir=tmp_path)
    critic = {name: r["critic_accuracy"] for name, r in report["per_label"].items()}
    assert critic[LABELS[0]] > 0.8 and max(critic[LABELS[1]], critic[LABELS[2]]) < 0.7, critic
    assert f"{critic[LABELS[0]]:.3f}" in format_report(report)


def test_a_model_of_transparency_is_measured_on_white_with_its_alpha(tmp_path: Path) -> None:
    data = synthetic_sprites(n_per_label=20)
    # The synthetic sprites' alpha: every non-white pixel is opaque.
    alpha = np.where((data.images == 255).all(-1), 0, 255).astype(np.uint8)
    data = SpriteDataset(data.images, data.labels, list(LABELS), "synthetic", alpha=alpha)
    train, _ = data.split(holdout=0.2, seed=0)

    class ClearCopies:
        """Training sprites as RGBA, with one lone opaque speck added in a corner."""

        labels, resolution, rgba = LABELS, 8, True
        palette = None

        def generate(self, context: str, n: int, seed: int = 0, **_: object) -> np.ndarray:
            mine = train.labels == LABELS.index(context)
            rgba = np.concatenate([train.images[mine][:n], train.alpha[mine][:n, ..., None]], -1)
            rgba = render.harden_alpha(rgba)
            rgba[:, 7, 7] = (10, 10, 10, 255)
            return rgba

    report = evaluate(ClearCopies(), data, n_per_label=8, seed=0, cache_dir=tmp_path)
    share, stray = report["alpha"]["opaque_share"], report["alpha"]["stray_opaque"]
    assert share["max_difference"] < 0.1  # copies of the data: the same opaque share
    assert stray["generated"] == pytest.approx(1 / 64) and stray["real_heldout"] == 0
    # The RGB metrics saw the sprites on white: copies, not black backgrounds.
    assert report["near_copy_rate"]["generated"] == 1.0
    assert "lone opaque pixels" in format_report(report)
