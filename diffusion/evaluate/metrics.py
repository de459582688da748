"""The evaluator's measures: functions of feature arrays or uint8 sprites, deterministic in a seed.

Nothing here knows about models or datasets, so each measure can be checked on synthetic data
whose answer is known (tests/test_evaluate*.py).
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

COPY_TOLERANCE = 32
COPY_MAX_SHARE = 0.05
COLOUR_TOLERANCE = 12
FLAT_TOLERANCE = 6
KID_SUBSETS = 10
# Subsets only bound the cost for big sets: the whole-set estimate has the least variance.
KID_SUBSET_SIZE = 1000
C2ST_FOLDS = 5
C2ST_EPOCHS = 8
C2ST_WIDTH = 16
C2ST_BATCH = 32
C2ST_LR = 3e-3
BOOTSTRAP_RESAMPLES = 200


def frechet_distance(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``x`` (n, d) and ``y`` (m, d).

    ``|mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr((S_x^1/2 S_y S_x^1/2)^1/2)``, in float64.
    With the centred rows scaled by 1/sqrt(n - 1) as A (so S_x = A^T A) and B likewise, the
    eigenvalues of S_x^1/2 S_y S_x^1/2 are those of A^T A B^T B, whose non-zero ones are those of
    (A B^T)(A B^T)^T: the cross term is the sum of the singular values of A B^T. One SVD of at
    most min(n, d) x min(m, d) replaces two d x d eigendecompositions, far cheaper when a side has
    fewer sprites than features, and it needs no fallback for repeated eigenvalues.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(
            f"need two (n >= 2, d) feature sets, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    mu_x, mu_y = x.mean(0), y.mean(0)
    a, b = (x - mu_x) / (len(x) - 1) ** 0.5, (y - mu_y) / (len(y) - 1) ** 0.5
    cross = torch.linalg.svdvals(_shortest_factor(a) @ _shortest_factor(b).T).sum()
    fd = (mu_x - mu_y).square().sum() + a.square().sum() + b.square().sum() - 2 * cross
    # Rounding can leave a tiny negative value for identical sets.
    return max(float(fd), 0.0)


def _shortest_factor(a: Tensor) -> Tensor:
    """A matrix F with F^T F = a^T a and at most d rows: a taller one's R of a = QR."""
    return torch.linalg.qr(a, mode="r")[1] if a.shape[0] > a.shape[1] else a


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel ``(x . y / d + 1)^3`` between the rows of ``x`` (n, d) and ``y`` (m, d)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(
    k_xx: np.ndarray,
    k_yy: np.ndarray,
    k_xy: np.ndarray,
    ix: np.ndarray | None = None,
    iy: np.ndarray | None = None,
    *,
    strata_x: np.ndarray | None = None,
    strata_y: np.ndarray | None = None,
) -> float:
    """The unbiased estimate of MMD^2 from kernel matrices, over the rows ``ix`` of x and ``iy``
    of y (default: all).

    The indices may repeat (a bootstrap resample, a reference drawn with replacement): a pair of
    copies of one sprite is left out of the within-set means like the diagonal, since
    ``k(x, x)`` is not a sample of ``k(x, x')`` and would bias the estimate upwards.

    ``strata_x`` and ``strata_y`` label the rows of the kernel matrices when each sample was
    drawn per stratum (n sprites per label) rather than at random. Such a sample holds fewer
    same-label pairs than random draws from the label mixture would, which biases the plain
    estimate downwards (same-label sprites are alike); with strata every pair of strata has its
    own mean, weighted by the sample's shares of the two strata.
    """
    x_mean = _pair_mean(k_xx, ix, strata_x)
    y_mean = _pair_mean(k_yy, iy, strata_y)
    cross = _pair_mean(k_xy, ix, strata_x, (iy, strata_y))
    return x_mean + y_mean - 2 * cross


def _pair_mean(
    k: np.ndarray,
    rows: np.ndarray | None,
    strata: np.ndarray | None,
    other: tuple[np.ndarray | None, np.ndarray | None] | None = None,
) -> float:
    """The stratified mean of ``k`` over the pairs of a sample of its rows and ``other``, a
    sample of its columns (draws, strata), or without ``other``, over the pairs of distinct
    draws of the one sample (see mmd2_unbiased).

    With c_i the times row i is drawn and W = one_hot(strata) * c, the pairs of strata a and b
    sum to (W'KW)_ab, less sum c_i^2 K_ii over stratum a when a = b: matrix products instead of
    gathering a resampled matrix, which is what makes the bootstrap cheap.
    """

    def weights(draws: np.ndarray | None, labels: np.ndarray | None, size: int) -> np.ndarray:
        counts = np.ones(size) if draws is None else np.bincount(draws, minlength=size)
        labels = np.zeros(size, np.int64) if labels is None else np.asarray(labels)
        _, stratum = np.unique(labels, return_inverse=True)
        w = np.zeros((size, stratum.max() + 1))
        w[np.arange(size), stratum] = counts
        return w

    w_rows = weights(rows, strata, k.shape[0])
    w_cols = w_rows if other is None else weights(*other, k.shape[1])
    sums = w_rows.T @ k @ w_cols
    pairs = np.outer(w_rows.sum(0), w_cols.sum(0))
    if other is None:
        sums -= np.diag(np.square(w_rows).T @ np.diag(k))
        pairs -= np.diag(np.square(w_rows).sum(0))
    share = np.outer(w_rows.sum(0), w_cols.sum(0))
    share[pairs <= 0] = 0  # a stratum drawn once has no pair within it
    means = np.divide(sums, pairs, out=np.zeros_like(sums), where=pairs > 0)
    return float((share * means).sum() / share.sum())


def kid_from_kernels(
    k_xx: np.ndarray,
    k_yy: np.ndarray,
    k_xy: np.ndarray,
    ix: np.ndarray,
    iy: np.ndarray,
    *,
    strata_x: np.ndarray | None = None,
    strata_y: np.ndarray | None = None,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """KID's mean and standard deviation over subsets, from kernel matrices and the rows ``ix``
    of x and ``iy`` of y that make the two samples (see :func:`mmd2_unbiased`)."""
    size_x, size_y = min(subset_size, len(ix)), min(subset_size, len(iy))
    strata = {"strata_x": strata_x, "strata_y": strata_y}
    if (size_x, size_y) == (len(ix), len(iy)):
        return mmd2_unbiased(k_xx, k_yy, k_xy, ix, iy, **strata), 0.0
    values = [
        mmd2_unbiased(
            k_xx,
            k_yy,
            k_xy,
            ix[rng.choice(len(ix), size_x, replace=False)],
            iy[rng.choice(len(iy), size_y, replace=False)],
            **strata,
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def kernel_inception_distance(
    x: np.ndarray,
    y: np.ndarray,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018) between feature sets ``x`` (n, d) and ``y`` (m, d).

    The unbiased MMD^2 with :func:`polynomial_kernel`, averaged over ``subsets`` random subsets
    of at most ``subset_size`` rows of each side (without replacement); returns the mean and
    the standard deviation over the subsets. When both sets fit, the one whole-set estimate
    and 0. Unbiased: its expectation is 0 for two samples of one distribution, so,
    unlike the Frechet distance, it can come out slightly negative.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"need two (n >= 2, d) feature sets, got {x.shape} and {y.shape}")
    return kid_from_kernels(
        polynomial_kernel(x, x),
        polynomial_kernel(y, y),
        polynomial_kernel(x, y),
        np.arange(len(x)),
        np.arange(len(y)),
        subsets=subsets,
        subset_size=subset_size,
        rng=np.random.default_rng(seed),
    )


def stratified_resample(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap resample of positions ``0..len(strata)-1``, with replacement within each
    stratum, so that the resample keeps the label mix of a label-balanced set."""
    strata = np.asarray(strata)
    picked = np.empty(len(strata), dtype=np.int64)
    for value in np.unique(strata):
        idx = np.flatnonzero(strata == value)
        picked[idx] = rng.choice(idx, len(idx))
    return picked


def normal_interval(estimate: float, se: float, level: float = 0.95) -> tuple[float, float]:
    """``estimate`` plus or minus the normal quantile of ``level`` times its standard error.

    Not a bootstrap percentile interval: a resample repeats sprites, which biases a Frechet
    distance upwards (fewer distinct sprites), so the percentiles of its replicates can lie
    wholly above the estimate. Their spread is sound, and this interval matches the z-test of
    ``diffusion.evaluate.compare``. (The estimate's own small-sample bias is what a floor and
    its ratio account for.)
    """
    half = statistics.NormalDist().inv_cdf(0.5 + level / 2) * se
    return estimate - half, estimate + half


def wilson_interval(successes: float, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (Wilson 1927): sound at 0 of 22 as at 90 of 300,
    where the normal interval of a rate near 0 collapses to a point."""
    if trials <= 0:
        raise ValueError("a proportion needs at least one trial")
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def copies_beyond_real(
    generated: tuple[float, int], real: tuple[float, int], level: float = 0.95
) -> bool:
    """Whether a near-copy rate of generated sprites is above the real held-out sprites' beyond
    noise: its ``level`` Wilson interval lies wholly above theirs. Each side is (rate, count).

    The held-out sprites' own rate is the allowance (the data keeps recolours and variants), so
    a model is memorising when it copies more often than an unseen real sprite resembles one.
    """
    (p_gen, n_gen), (p_real, n_real) = generated, real
    return (
        wilson_interval(p_gen * n_gen, n_gen, level)[0]
        > wilson_interval(p_real * n_real, n_real, level)[1]
    )


def near_copies(
    images: np.ndarray,
    reference: np.ndarray,
    *,
    tolerance: int = COPY_TOLERANCE,
    max_share: float = COPY_MAX_SHARE,
) -> np.ndarray:
    """Which sprites are near copies of a reference sprite or of its mirror image.

    A pixel differs when some channel is off by more than ``tolerance``; a sprite is a near copy
    when at most ``max_share`` of its pixels differ from one reference. Returns (N,) bool.
    """
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"sprite shapes differ: {images.shape[1:]} vs {reference.shape[1:]}")
    pixels = images.shape[1] * images.shape[2]
    max_differing = math.floor(max_share * pixels)
    imgs = torch.from_numpy(np.ascontiguousarray(images).reshape(len(images), pixels, 3))
    refs = np.concatenate([reference, reference[:, :, ::-1]]).reshape(-1, pixels, 3)
    refs = torch.from_numpy(refs)
    # Exact pruning: a near copy has at most max_differing pixels off by <= 255 per channel and
    # the rest off by <= tolerance, which caps its squared distance. float64 keeps the squared
    # distances of integer pixels exact. Only the few pairs under the cap get the pixel count.
    cap = 3 * (max_differing * 255**2 + (pixels - max_differing) * tolerance**2)
    flat_refs = refs.reshape(len(refs), -1).double()
    ref_sq = flat_refs.square().sum(1)
    found = torch.zeros(len(images), dtype=torch.bool)
    for start in range(0, len(images), 256):
        x = imgs[start : start + 256].reshape(-1, pixels * 3).double()
        dist = x.square().sum(1, keepdim=True) + ref_sq - 2 * x @ flat_refs.T
        for pairs in torch.nonzero(dist <= cap).split(8192):
            i, j = pairs.T
            diff = (imgs[start + i].short() - refs[j].short()).abs().amax(-1) > tolerance
            hits = (diff.sum(-1) <= max_differing).nonzero().squeeze(1)
            found[start + i[hits]] = True
    return found.numpy()


def colours_per_sprite(images: np.ndarray, tolerance: int = COLOUR_TOLERANCE) -> np.ndarray:
    """Distinct colours of each (H, W, 3) uint8 sprite once colours within ``tolerance`` (in
    every channel) are merged: most frequent first, a colour counts when no counted one is near.
    """
    counts = np.empty(len(images), dtype=np.int64)
    for i, sprite in enumerate(images):
        colours, freq = np.unique(sprite.reshape(-1, 3), axis=0, return_counts=True)
        kept: list[np.ndarray] = []
        for colour in colours[np.argsort(-freq, kind="stable")].astype(np.int16):
            if not any(np.abs(colour - k).max() <= tolerance for k in kept):
                kept.append(colour)
        counts[i] = len(kept)
    return counts


def flat_pair_share(images: np.ndarray, tolerance: int = FLAT_TOLERANCE) -> np.ndarray:
    """Per sprite, the share of horizontal and vertical neighbour pairs of (almost) one colour."""
    x = np.asarray(images, dtype=np.int16)
    across = np.abs(x[:, :, 1:] - x[:, :, :-1]).max(-1) <= tolerance
    down = np.abs(x[:, 1:] - x[:, :-1]).max(-1) <= tolerance
    return (across.sum((1, 2)) + down.sum((1, 2))) / (across[0].size + down[0].size)


def opaque_share(alpha: np.ndarray) -> np.ndarray:
    """Per sprite, the share of its pixels that are opaque (alpha at least half)."""
    return (np.asarray(alpha) >= 128).mean(axis=(1, 2))


def stray_opaque_share(alpha: np.ndarray) -> np.ndarray:
    """Per sprite, the share of its pixels that are opaque with no opaque 4-neighbour: the
    lone specks a model of transparency leaves in the clear background."""
    opaque = np.pad(np.asarray(alpha) >= 128, ((0, 0), (1, 1), (1, 1)))
    core = opaque[:, 1:-1, 1:-1]
    neighbours = (
        opaque[:, :-2, 1:-1] | opaque[:, 2:, 1:-1] | opaque[:, 1:-1, :-2] | opaque[:, 1:-1, 2:]
    )
    return (core & ~neighbours).mean(axis=(1, 2))


def palette_distance(images: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Per sprite, the mean RGB distance (0..255 units) of a pixel to its nearest palette colour."""
    images = np.asarray(images)
    colours, inverse = np.unique(images.reshape(-1, 3), axis=0, return_inverse=True)
    palette = np.asarray(palette, np.float64)
    nearest = np.concatenate(
        [
            np.sqrt(((chunk[:, None] - palette[None]) ** 2).sum(-1)).min(1)
            for chunk in np.array_split(colours.astype(np.float64), len(colours) // 1024 + 1)
        ]
    )
    return nearest[inverse.reshape(-1)].reshape(len(images), -1).mean(1)


# The 8 neighbours of a pixel as (dy, dx), in the bit order of a pattern code, and the order
# that a left-right mirror image gives them (E<->W, SE<->SW, NE<->NW).
_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))
_MIRRORED = (1, 0, 2, 3, 5, 4, 7, 6)


def _pattern_classes() -> np.ndarray:
    """Class index (0..143) of each 8-bit code: a code and its mirror image share one class."""
    codes = np.arange(256)
    mirrored = sum(((codes >> bit) & 1) << _MIRRORED[bit] for bit in range(8))
    _, classes = np.unique(np.minimum(codes, mirrored), return_inverse=True)
    return classes


_PATTERN_CLASS = _pattern_classes()
PATTERN_DIM = int(_PATTERN_CLASS.max()) + 2  # the mirror classes and the background


def _same_as_neighbours(images: np.ndarray, tolerance: int) -> np.ndarray:
    """(N, H, W, 8) bool: which of its 8 neighbours (in :data:`_NEIGHBOURS` order) share each
    pixel's colour, every channel within ``tolerance``; pixels beyond the border repeat the edge."""
    x = np.asarray(images, np.int16)
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return np.stack(
        [
            np.abs(x - padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]).max(-1) <= tolerance
            for dy, dx in _NEIGHBOURS
        ],
        -1,
    )


def _background(images: np.ndarray, tolerance: int) -> np.ndarray:
    """(N, H, W) bool: the white background (every channel within ``tolerance`` of 255)."""
    return np.asarray(images).min(-1) >= 255 - tolerance


def pixel_patterns(images: np.ndarray, tolerance: int = COPY_TOLERANCE) -> np.ndarray:
    """Local pattern histograms: (N, :data:`PATTERN_DIM`) float64, each row summing to 1.

    Every pixel gets a code: which of its 8 neighbours share its colour (every channel within
    ``tolerance``, the near-copy tolerance, so that the faint colour noise of generated pixels
    does not count). A code and its mirror image are one pattern, as a sprite and its mirror
    image are alike; white background pixels are one more. Pixel art draws with flat areas and
    unbroken one-pixel outlines, so a stray pixel (no equal neighbour), a broken outline or a
    muddy cluster each moves weight between patterns, where a label classifier looks past them.
    """
    same = _same_as_neighbours(images, tolerance)
    code = (same.astype(np.int64) << np.arange(8)).sum(-1)
    pattern = _PATTERN_CLASS[code]
    pattern[_background(images, tolerance)] = PATTERN_DIM - 1
    n, pixels = len(pattern), pattern[0].size
    rows = pattern.reshape(n, pixels) + np.arange(n)[:, None] * PATTERN_DIM
    return np.bincount(rows.ravel(), minlength=n * PATTERN_DIM).reshape(n, -1) / pixels


def balanced_indices(
    labels: np.ndarray, n_per_label: int, num_labels: int, rng: np.random.Generator
) -> np.ndarray:
    """n indices per label (without replacement when the label has enough, else with)."""
    picked = []
    for label in range(num_labels):
        idx = np.flatnonzero(labels == label)
        if len(idx) == 0:
            raise ValueError(f"label {label} has no examples to draw a reference set from")
        picked.append(rng.choice(idx, n_per_label, replace=len(idx) < n_per_label))
    return np.concatenate(picked)


def structure_maps(images: np.ndarray, tolerance: int = COPY_TOLERANCE) -> Tensor:
    """The critic's input: (N, 9, H, W) float, per pixel which of its 8 neighbours share its
    colour (see :func:`pixel_patterns`) and whether it is white background.

    Colour itself is left out on purpose. Every sampler of one model shares that model's colour
    habits (an RGB critic keyed on them told two samplers apart no better than chance, while
    their drawing differed), and the palette measures (colours per sprite, distance to the
    palette) already report colour; the critic is there to judge how a sprite is drawn.
    """
    maps = np.concatenate(
        [_same_as_neighbours(images, tolerance), _background(images, tolerance)[..., None]], -1
    )
    return torch.from_numpy(maps).permute(0, 3, 1, 2).float()


# structure_maps' channels in a mirror image: the neighbour bits swap sides, background stays.
_MIRRORED_MAPS = (*_MIRRORED, 8)


class TwoSampleCritic(nn.Module):
    """The classifier two-sample test's critic: a small CNN over :func:`structure_maps`.

    Small receptive fields (two 3x3 layers at full resolution, one after a 2x2 pooling) and a
    max over positions next to the mean: one stray pixel or one broken outline anywhere is
    evidence, which a globally averaged deep feature would dilute.
    """

    def __init__(self, width: int = C2ST_WIDTH) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(len(_MIRRORED_MAPS), width),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 2 * width),
        )
        self.head = nn.Linear(4 * width, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)).squeeze(1)


class TwoSampleResult(NamedTuple):
    """Each fold's held-out figures of a classifier two-sample test (0.5: no difference found).

    ``accuracy``: the share of sprites the critic assigns to their own set. ``auc``: how often it
    scores a sprite of ``b`` above one of ``a`` (ties half); unlike the accuracy it keeps the
    critic's confidence, which makes it the more sensitive of the two. ``correct``: per sprite
    (those of ``a``, then those of ``b``), whether the critic that did not see it in training
    assigned it to its own set: which sprites, and so which labels, give their set away.
    """

    accuracy: np.ndarray
    auc: np.ndarray
    correct: np.ndarray


# The figures of a TwoSampleResult taken over folds.
TWO_SAMPLE_FIGURES = ("accuracy", "auc")


def two_sample_test(
    a: np.ndarray,
    b: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    folds: int = C2ST_FOLDS,
    epochs: int = C2ST_EPOCHS,
    seed: int = 0,
) -> TwoSampleResult:
    """The classifier two-sample test (Lopez-Paz & Oquab 2017): in each of ``folds`` folds a fresh
    :class:`TwoSampleCritic` learns to tell sprites ``a`` from sprites ``b`` on the other folds.

    ``a`` and ``b`` are (m, H, W, 3) uint8 of equal count, so that 0.5 is chance: the critic
    then finds nothing that tells the sets apart, and 1.0 means every sprite gives its set away.
    ``labels`` (m,), when given, names the label of ``a[i]`` and of ``b[i]`` alike; the folds
    then hold each label in equal shares, so that no fold's label mix differs between the sides.
    Deterministic in ``seed``; the caller's torch random state is left as it was.
    """
    if a.shape != b.shape or a.ndim != 4 or len(a) < folds:
        raise ValueError(f"need two sprite sets of one shape, >= {folds} each: {a.shape} {b.shape}")
    m = len(a)
    rng = np.random.default_rng(seed)
    strata = np.zeros(m, np.int64) if labels is None else np.asarray(labels)
    # Round-robin over a shuffle of each label: every fold gets its share of every label.
    fold_of = np.empty(m, np.int64)
    offset = 0
    for value in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == value))
        fold_of[idx] = (offset + np.arange(len(idx))) % folds
        offset += len(idx)
    x = torch.cat([structure_maps(a), structure_maps(b)])
    y = torch.cat([torch.zeros(m), torch.ones(m)])
    fold_of = np.concatenate([fold_of, fold_of])
    accuracy, auc, correct = np.empty(folds), np.empty(folds), np.empty(2 * m, bool)
    with torch.random.fork_rng(devices=[]):
        for fold in range(folds):
            test = torch.from_numpy(np.flatnonzero(fold_of == fold))
            train = torch.from_numpy(np.flatnonzero(fold_of != fold))
            torch.manual_seed(seed * folds + fold)
            critic = _train_critic(x[train], y[train], epochs)
            with torch.no_grad():
                score = critic(x[test]).numpy()
            truth = y[test].numpy() == 1
            correct[test.numpy()] = (score > 0) == truth
            accuracy[fold] = np.mean(correct[test.numpy()])
            above = score[truth][:, None] - score[~truth][None, :]
            auc[fold] = np.mean(above > 0) + 0.5 * np.mean(above == 0)
    return TwoSampleResult(accuracy, auc, correct)


def _train_critic(x: Tensor, y: Tensor, epochs: int) -> TwoSampleCritic:
    """A critic trained on maps ``x`` (n, 9, H, W) with targets ``y`` (n,) in {0, 1}, from the
    global torch random state (seeded by the caller), with random mirror images."""
    critic = TwoSampleCritic()
    optimizer = torch.optim.AdamW(critic.parameters(), lr=C2ST_LR, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / C2ST_BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=C2ST_LR, total_steps=steps)
    mirrored = list(_MIRRORED_MAPS)
    critic.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), C2ST_BATCH):
            idx = order[start : start + C2ST_BATCH]
            xb = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3)[:, mirrored], xb)
            loss = F.binary_cross_entropy_with_logits(critic(xb), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return critic.eval()
