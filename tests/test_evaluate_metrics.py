"""Tests for the evaluator's newer measures on synthetic data with known answers: KID, the
pixel-pattern histograms, the classifier two-sample test, the bootstrap and compare()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion.evaluate import compare, kernel_inception_distance, pixel_patterns
from diffusion.evaluate.metrics import (
    _MIRRORED_MAPS,
    PATTERN_DIM,
    copies_beyond_real,
    mmd2_unbiased,
    normal_interval,
    opaque_share,
    polynomial_kernel,
    stratified_resample,
    stray_opaque_share,
    structure_maps,
    two_sample_test,
    wilson_interval,
)

# --- KID -------------------------------------------------------------------------------------


def test_kid_of_identical_and_shifted_sets() -> None:
    x = np.random.default_rng(0).standard_normal((200, 8))
    same, _ = kernel_inception_distance(x, x)
    shifted, _ = kernel_inception_distance(x, x + 1.0)
    assert abs(same) < 0.02 * shifted
    assert shifted > 1.0


def test_kid_is_unbiased_on_gaussians() -> None:
    """The mean of many small-sample estimates matches a large-sample one, for equal and for
    different distributions; the biased estimate (diagonal included) would sit well above."""
    rng = np.random.default_rng(1)
    d, n, trials = 4, 20, 300

    def draw(shift: float, size: int) -> np.ndarray:
        return rng.standard_normal((size, d)) * [1.0, 1.0, 0.5, 2.0] + shift

    def biased(x: np.ndarray, y: np.ndarray) -> float:
        k = polynomial_kernel
        return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()

    big, _ = kernel_inception_distance(draw(0.0, 3000), draw(0.5, 3000))
    for shift, truth in ((0.0, 0.0), (0.5, big)):
        pairs = [(draw(0.0, n), draw(shift, n)) for _ in range(trials)]
        estimates = [kernel_inception_distance(x, y)[0] for x, y in pairs]
        se = np.std(estimates) / np.sqrt(trials)
        assert abs(np.mean(estimates) - truth) < 3.5 * se, (shift, np.mean(estimates), truth, se)
        # The test can tell: the biased estimate (pairs of a row with itself kept) is far off.
        assert np.mean([biased(x, y) for x, y in pairs]) - truth > 10 * se


def test_kid_of_samples_drawn_per_label() -> None:
    """Two samples of a two-label mixture drawn n per label: with the labels as strata the
    estimate is unbiased; the plain one is biased low (too few same-label pairs within a set)."""
    rng = np.random.default_rng(5)
    n, trials = 6, 300
    centres = np.array([[3.0, 0.0], [-3.0, 0.0]])
    strata = np.repeat([0, 1], n)
    plain, stratified = [], []
    for _ in range(trials):
        x = centres[strata] + rng.standard_normal((2 * n, 2))
        y = centres[strata] + rng.standard_normal((2 * n, 2))
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        plain.append(mmd2_unbiased(k_xx, k_yy, k_xy))
        stratified.append(mmd2_unbiased(k_xx, k_yy, k_xy, strata_x=strata, strata_y=strata))
    se = np.std(stratified) / np.sqrt(trials)
    assert abs(np.mean(stratified)) < 3.5 * se
    assert np.mean(plain) < -10 * se


def test_kid_subsets_and_repeated_rows() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((150, 5)), rng.standard_normal((120, 5)) + 0.3
    whole, spread = kernel_inception_distance(x, y, subset_size=1000)
    assert spread == 0.0  # the subsets are the whole sets: one exact estimate
    mean, spread = kernel_inception_distance(x, y, subsets=20, subset_size=50)
    assert spread > 0 and abs(mean - whole) < 3 * spread
    assert kernel_inception_distance(x, y, subsets=20, subset_size=50) == (mean, spread)
    # Every row twice: pairs of copies are left out, so the estimate is unchanged.
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    doubled = np.repeat(np.arange(len(x)), 2)
    assert mmd2_unbiased(k_xx, k_yy, k_xy, doubled) == pytest.approx(whole, rel=1e-9)


def test_kid_rejects_mismatched_features() -> None:
    with pytest.raises(ValueError, match="feature sets"):
        kernel_inception_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# --- the bootstrap ---------------------------------------------------------------------------


def test_stratified_resample_keeps_the_label_mix() -> None:
    labels = np.array([0] * 5 + [1] * 3 + [2] * 7)
    picked = stratified_resample(labels, np.random.default_rng(0))
    np.testing.assert_array_equal(labels[picked], labels)


def test_bootstrap_interval_covers_the_truth() -> None:
    """Over many synthetic samples the 95% interval from the bootstrap's standard error holds
    the true value about 95% of the time: for a mean, and for KID (truth: a large-sample
    estimate) resampled as the evaluator does."""
    rng = np.random.default_rng(3)
    trials, resamples = 200, 200
    strata = np.repeat([0, 1], 20)
    hits = 0
    for _ in range(trials):
        x = rng.exponential(2.0, 40)  # skewed: the true mean is 2
        reps = [x[stratified_resample(strata, rng)].mean() for _ in range(resamples)]
        low, high = normal_interval(x.mean(), np.std(reps, ddof=1))
        hits += low <= 2.0 <= high
    assert 0.88 <= hits / trials <= 0.99

    truth, _ = kernel_inception_distance(
        rng.standard_normal((3000, 3)), rng.standard_normal((3000, 3)) + 0.4
    )
    hits, trials = 0, 60
    strata = np.zeros(60, np.int64)
    for _ in range(trials):
        x, y = rng.standard_normal((60, 3)), rng.standard_normal((60, 3)) + 0.4
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        reps = [
            mmd2_unbiased(
                k_xx, k_yy, k_xy, stratified_resample(strata, rng), stratified_resample(strata, rng)
            )
            for _ in range(resamples)
        ]
        low, high = normal_interval(mmd2_unbiased(k_xx, k_yy, k_xy), np.std(reps, ddof=1))
        hits += low <= truth <= high
    assert hits / trials >= 0.85


# --- pixel patterns --------------------------------------------------------------------------


def test_pixel_patterns_of_known_images() -> None:
    flat = np.full((1, 6, 6, 3), 90, np.uint8)
    white = np.full((1, 6, 6, 3), 255, np.uint8)
    speck = flat.copy()
    speck[0, 3, 2] = 200  # one stray pixel
    checker = np.where((np.indices((6, 6)).sum(0) % 2 == 0)[..., None], 0, 180)
    checker = checker.astype(np.uint8).repeat(3, -1)[None]
    p = pixel_patterns(np.concatenate([flat, white, speck, checker]))
    assert p.shape == (4, PATTERN_DIM)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[0].max() == 1.0  # every pixel: all 8 neighbours alike
    assert p[1, -1] == 1.0  # all background
    # The stray pixel has no equal neighbour; 8 pixels around it lose one; 27 stay whole.
    # (Mirror images merge: the pixels left and right of it share one pattern, and so do the
    # two above it diagonally, and the two below.)
    assert sorted(p[2][p[2] > 0] * 36) == pytest.approx([1, 1, 1, 2, 2, 2, 27])
    full = int(np.argmax(p[0]))
    assert p[2, full] == pytest.approx(27 / 36)
    assert p[3, full] == 0.0 and p[3].max() < 1.0  # a checkerboard has no flat pixel


def test_pixel_patterns_merge_mirror_images() -> None:
    images = np.random.default_rng(0).integers(0, 4, (10, 8, 8, 3)).astype(np.uint8) * 80
    np.testing.assert_array_equal(pixel_patterns(images), pixel_patterns(images[:, :, ::-1]))
    # The critic's augmentation mirrors its maps the same way.
    maps = structure_maps(images)
    mirrored = structure_maps(np.ascontiguousarray(images[:, :, ::-1]))
    torch.testing.assert_close(mirrored, maps.flip(3)[:, list(_MIRRORED_MAPS)])


# --- the classifier two-sample test ----------------------------------------------------------


def blobs(n: int, seed: int, speckle: float = 0.0) -> np.ndarray:
    """8x8 sprites on white: a flat rectangle of a random colour, optionally with stray pixels."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 8, 8, 3), 255, np.uint8)
    for img in images:
        r, c = rng.integers(0, 3, 2)
        h, w = rng.integers(3, 6, 2)
        img[r : r + h, c : c + w] = rng.integers(0, 200, 3)
        stray = rng.random((8, 8)) < speckle
        img[stray] = rng.integers(0, 256, (stray.sum(), 3))
    return images


def test_c2st_on_equal_and_different_distributions() -> None:
    labels = np.repeat([0, 1], 60)
    same = two_sample_test(blobs(120, 0), blobs(120, 1), labels=labels, seed=0)
    assert abs(same.accuracy.mean() - 0.5) < 0.1 and abs(same.auc.mean() - 0.5) < 0.1, same
    different = two_sample_test(blobs(120, 0), blobs(120, 2, speckle=0.1), labels=labels)
    assert different.accuracy.mean() > 0.95 and different.auc.mean() > 0.98, different
    assert len(different.accuracy) == len(different.auc) == 5


def test_c2st_says_which_sprites_give_their_set_away() -> None:
    labels = np.repeat([0, 1], 60)
    a = blobs(120, 0)
    b = np.concatenate([blobs(60, 1), blobs(60, 2, speckle=0.1)])  # only label 1 is speckled
    result = two_sample_test(a, b, labels=labels, seed=0)
    called_right = [result.correct[np.tile(labels, 2) == v].mean() for v in (0, 1)]
    assert called_right[1] > 0.9 and abs(called_right[0] - 0.5) < 0.15, called_right
    # The same calls as the folds' accuracies (equal folds here).
    assert result.correct.mean() == pytest.approx(result.accuracy.mean())


def test_c2st_is_deterministic_and_leaves_torch_random_state() -> None:
    a, b = blobs(40, 0), blobs(40, 1, speckle=0.05)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = two_sample_test(a, b, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    again = two_sample_test(a, b, seed=4)
    np.testing.assert_array_equal(first.accuracy, again.accuracy)
    np.testing.assert_array_equal(first.auc, again.auc)
    with pytest.raises(ValueError, match="one shape"):
        two_sample_test(a, b[:30])


# --- compare() -------------------------------------------------------------------------------


def report(value: float, se: float, n: int = 64, memorised: list[str] = ()) -> dict:
    return {
        "data": "d",
        "n_per_label": n,
        "kid_patterns": {"generated": value, "se": {"generated": se}},
        "near_copy_rate": {"memorised": list(memorised)},
    }


def test_compare() -> None:
    result = compare(report(1.0, 0.1), report(1.5, 0.1), "kid_patterns")
    assert result["better"] == "a" and result["difference"] == pytest.approx(-0.5)
    assert result["z"] == pytest.approx(-0.5 / np.hypot(0.1, 0.1))
    assert compare(report(1.5, 0.1), report(1.0, 0.1), "kid_patterns")["better"] == "b"
    # 0.2 apart with a standard error of 0.14: within the noise at 95%, not at 80%.
    assert compare(report(1.0, 0.1), report(1.2, 0.1), "kid_patterns")["better"] is None
    assert (
        compare(report(1.0, 0.1), report(1.2, 0.1), "kid_patterns", confidence=0.8)["better"] == "a"
    )
    with pytest.raises(ValueError, match="n_per_label"):
        compare(report(1.0, 0.1), report(1.2, 0.1, n=32), "kid_patterns")
    with pytest.raises(ValueError, match="uncertainty"):
        compare(report(1.0, 0.1), report(1.2, 0.1), "label_accuracy")


def test_compare_refuses_a_winner_that_memorises() -> None:
    copier = report(1.0, 0.1, memorised=["food"])
    result = compare(copier, report(1.5, 0.1), "kid_patterns")
    assert result["better"] is None and result["memorised"] == {"a": ["food"], "b": []}
    assert compare(report(1.5, 0.1), copier, "kid_patterns")["better"] is None
    # Both copy food: the figures decide again.
    assert compare(copier, report(1.5, 0.1, memorised=["food"]), "kid_patterns")["better"] == "a"
    # The loser's copies do not stop the winner.
    assert compare(copier, report(0.5, 0.1), "kid_patterns")["better"] == "b"


def test_wilson_interval_and_copies_beyond_real() -> None:
    low, high = wilson_interval(0, 22)
    assert low == 0 and high == pytest.approx(0.1487, abs=1e-3)  # 0 of 22 allows up to ~15%
    low, high = wilson_interval(30, 100)
    assert (low, high) == pytest.approx((0.2189, 0.3958), abs=1e-3)
    assert wilson_interval(50, 50)[1] == 1.0
    with pytest.raises(ValueError, match="trial"):
        wilson_interval(0, 0)
    # A third of 300 generated food sprites are copies; no held-out food sprite is one.
    assert copies_beyond_real((0.307, 300), (0.0, 22))
    # 1 copy in 100 against 0 of 22 held out: within the noise of so few real sprites.
    assert not copies_beyond_real((0.01, 300), (0.0, 22))
    # The data's own recolours: as many copies as unseen real sprites have is no memorising.
    assert not copies_beyond_real((0.2, 300), (0.2, 200))


def test_alpha_figures_count_opaque_pixels_and_lone_specks():
    alpha = np.zeros((2, 4, 4), np.uint8)
    alpha[0, 1:3, 1:3] = 255  # a 2x2 block: opaque, no specks
    alpha[1, 0, 0] = alpha[1, 3, 3] = 255  # two lone specks
    alpha[1, 2, 0] = alpha[1, 3, 0] = 200  # a pair: not lone
    np.testing.assert_allclose(opaque_share(alpha), [4 / 16, 4 / 16])
    np.testing.assert_allclose(stray_opaque_share(alpha), [0, 2 / 16])
