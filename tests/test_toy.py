"""The 2D toy: its closed-form denoiser is the true posterior mean, and the package's samplers,
run on it unchanged, draw the mixture; then the 2D tab that shows it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import SAMPLERS, Schedule
from diffusion.toy import MAX_POINTS, SHAPES, Mixture, Toy
from ui.errors import InputError
from ui.limits import TOY_FRAMES
from ui.storage import OutputStore
from ui.studio import Studio
from ui.toy import ToyTab

SCHEDULE = Schedule.linear(500)  # the shipped models' schedule
MEANS = [[-0.8, -0.45], [0.8, -0.45], [0.0, 0.75]]
STDS = [0.25, 0.15, 0.2]
WEIGHTS = [0.5, 0.3, 0.2]


pytestmark = pytest.mark.usefixtures("one_thread")


def mixture_pdf(x0: np.ndarray) -> np.ndarray:
    """The data density of the three blobs, written out here independently of the module."""
    total = np.zeros(len(x0))
    for mu, s, w in zip(MEANS, STDS, WEIGHTS, strict=True):
        d2 = ((x0 - np.asarray(mu)) ** 2).sum(-1)
        total += w * np.exp(-d2 / (2 * s**2)) / (2 * math.pi * s**2)
    return total


def test_one_gaussian_gets_the_textbook_posterior_mean():
    mu, s = np.array([0.3, -0.2]), 0.5
    one = Mixture.of([mu], s)
    x = torch.tensor([[1.0, 1.0], [-2.0, 0.5], [0.3, -0.2]], dtype=torch.float64)
    for sigma in (0.1, 0.5, 2.0, 10.0):
        expected = mu + s**2 / (s**2 + sigma**2) * (x.numpy() - mu)  # the Gaussian shrinkage
        np.testing.assert_allclose(one.denoise(x, sigma).numpy(), expected, atol=1e-12)
        eps = (x.numpy() - expected) / sigma
        np.testing.assert_allclose(one.eps(x, torch.tensor(sigma)).numpy(), eps, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.2, 0.6, 1.5])
def test_mixture_denoiser_is_the_brute_force_posterior_mean(sigma: float):
    """E[x0 | x] by quadrature over a fine grid of x0: prior times likelihood, normalised."""
    mixture = Mixture.of(MEANS, STDS, WEIGHTS)
    axis = np.arange(-3, 3, 0.01) + 0.005
    x0 = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    prior = mixture_pdf(x0)
    x = np.array([[0.0, 0.0], [0.5, -0.3], [-1.2, 0.9], [0.1, 0.6]])
    for point in x:
        posterior = prior * np.exp(-((point - x0) ** 2).sum(-1) / (2 * sigma**2))
        expected = (posterior[:, None] * x0).sum(0) / posterior.sum()
        got = mixture.denoise(torch.tensor(point[None]), sigma).numpy()[0]
        np.testing.assert_allclose(got, expected, atol=1e-4)
    # The noise estimate is what the posterior mean leaves: x = x0 + sigma * eps.
    xt = torch.tensor(x)
    eps = mixture.eps(xt, torch.tensor(sigma, dtype=torch.float64))
    np.testing.assert_allclose(eps, (xt - mixture.denoise(xt, sigma)) / sigma, atol=1e-12)


def test_mixture_moments_match_its_samples():
    mixture = Mixture.of(MEANS, STDS, WEIGHTS)
    x = mixture.sample(100_000, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(x.mean(0), mixture.mean(), atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), mixture.covariance(), atol=0.01)


def moments_error(toy: Toy, points: np.ndarray) -> tuple[float, float]:
    mean, cov = toy.mixture.mean().numpy(), toy.mixture.covariance().numpy()
    return np.abs(points.mean(0) - mean).max(), np.abs(np.cov(points.T) - cov).max()


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_draws_the_mixture_at_generous_steps(sampler: str):
    toy = Toy(Mixture.of(MEANS, STDS, WEIGHTS), SCHEDULE)
    path = toy.reverse(sampler, 100, 2000, seed=0)
    mean_error, cov_error = moments_error(toy, path.x[-1])
    # Standard errors at 2,000 points: about 0.016 for the mean, 0.017 for the variances.
    assert mean_error < 0.06 and cov_error < 0.06, (sampler, mean_error, cov_error)


def test_too_few_steps_shrink_the_samples_towards_the_mean():
    toy = Toy(Mixture.of(MEANS, STDS, WEIGHTS), SCHEDULE)
    one_step = toy.reverse("ddim", 1, 2000, seed=0).x[-1]
    # One step from pure noise returns E[x0 | x_T]: nearly the data's mean for every point.
    assert np.trace(np.cov(one_step.T)) < 0.1 * float(torch.trace(toy.mixture.covariance()))


def test_a_path_keeps_every_state_from_noise_to_samples():
    toy = Toy(Mixture.shape("ring"), SCHEDULE)
    for sampler, steps in [("heun", 20), ("ddpm", 30), ("dpmpp_2m", 20)]:
        path = toy.reverse(sampler, steps, 300, seed=3)
        assert path.x.shape == (steps + 1, 300, 2) and path.x0.shape == (steps, 300, 2)
        assert path.t[0] == SCHEDULE.T and path.t[-1] == 0 and np.all(np.diff(path.t) < 0)
        assert path.calls == SAMPLERS[sampler].calls(steps)  # what a network would have cost
        assert 0.85 < path.x[0].std() < 1.15  # the start: pure noise, N(0, I) in the VP view
        radius = np.linalg.norm(path.x[-1], axis=1)
        assert abs(np.median(radius) - 1) < 0.03  # the end: on the ring
    again = toy.reverse("ddpm", 12, 300, seed=3)
    assert np.array_equal(again.x, toy.reverse("ddpm", 12, 300, seed=3).x)
    assert not np.array_equal(again.x, toy.reverse("ddpm", 12, 300, seed=4).x)


def test_forward_process_has_the_noised_mixtures_moments():
    toy = Toy(Mixture.of(MEANS, STDS, WEIGHTS), SCHEDULE)
    ts = [0, 50, 250, 500]
    frames = toy.forward_frames(MAX_POINTS, ts, seed=1)
    for t, x in zip(ts, frames, strict=True):
        abar = float(SCHEDULE.alpha_bar(float(t)))
        mean = math.sqrt(abar) * toy.mixture.mean().numpy()
        cov = abar * toy.mixture.covariance().numpy() + (1 - abar) * np.eye(2)
        np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
        np.testing.assert_allclose(np.cov(x.T), cov, atol=0.03)


@pytest.mark.parametrize("t", [0.0, 40.0, 250.0])
def test_density_is_a_density_and_the_field_is_the_scaled_score(t: float):
    toy = Toy(Mixture.of(MEANS, STDS, WEIGHTS), SCHEDULE)
    h = 0.02
    axis = np.arange(-5, 5, h)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)
    assert abs(toy.density(grid, t).sum() * h * h - 1) < 1e-3
    # E[eps | x_t] = -sqrt(1 - abar) * grad log p_t(x_t), by central differences.
    points = np.array([[0.2, 0.1], [-0.7, -0.3], [1.0, 1.2]])
    step = np.eye(2) * 1e-5
    grad = np.stack(
        [
            (np.log(toy.density(points + d, t)) - np.log(toy.density(points - d, t))) / 2e-5
            for d in step
        ],
        1,
    )
    abar = float(SCHEDULE.alpha_bar(t))
    np.testing.assert_allclose(toy.field(points, t), -math.sqrt(1 - abar) * grad, atol=1e-4)


def test_every_shape_is_a_mixture_in_the_unit_square():
    sprite = np.zeros((16, 16, 4), np.uint8)
    sprite[4:12, 6:10, 3] = 255
    for shape in SHAPES:
        mixture = Mixture.shape(shape, sprite)
        assert float(mixture.weights.sum()) == pytest.approx(1)
        assert float(mixture.means.abs().max()) <= 1.1


def test_a_silhouette_is_one_component_per_drawn_pixel_upright():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0, 3] = rgba[0, 1, 3] = rgba[3, 3, 3] = 255  # two pixels top left, one bottom right
    mixture = Mixture.silhouette(rgba)
    np.testing.assert_allclose(mixture.means.numpy(), [[-0.75, 0.75], [-0.25, 0.75], [0.75, -0.75]])
    rgb = np.full((4, 4, 3), 255, np.uint8)
    rgb[3, 3] = (200, 40, 40)
    assert Mixture.silhouette(rgb).means.tolist() == [[0.75, -0.75]]  # white is the background
    with pytest.raises(ValueError, match="silhouette is empty"):
        Mixture.silhouette(np.zeros((4, 4, 4), np.uint8))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda toy: Mixture.shape("heart"), "unknown shape 'heart'"),
        (lambda toy: Mixture.shape("sprite"), "needs a sprite"),
        (lambda toy: toy.reverse("euler", 10, 10), "unknown sampler 'euler'"),
        (lambda toy: toy.reverse("ddim", 0, 10), "steps must be between 1 and 500"),
        (lambda toy: toy.reverse("ddim", 10, 0), f"from 1 to {MAX_POINTS}"),
        (lambda toy: toy.reverse("heun", 10, 10, eta=0.5), "takes no eta"),
        (lambda toy: toy.field(np.zeros((1, 2)), 501), "timesteps must lie in"),
    ],
)
def test_bad_choices_are_refused_with_what_is_allowed(call, message: str):
    toy = Toy(Mixture.shape("gaussians"), SCHEDULE)
    with pytest.raises(ValueError, match=message):
        call(toy)


# -- the 2D tab ---------------------------------------------------------------------------------


@pytest.fixture
def tab(tmp_path: Path) -> ToyTab:
    from tests.test_app import tiny_pipeline

    return ToyTab(Studio({"tiny": tiny_pipeline()}, OutputStore(tmp_path / "out")))


def test_the_tab_draws_the_map_and_the_forward_animation(tab: ToyTab):
    sprite = np.full((1, 16, 16, 4), 0, np.uint8)
    sprite[0, 2:6, 2:6] = 255  # the last Generate run's first sprite: a square
    out = tab.explore("tiny", sprite, "sprite", ["ddpm", "heun"], 3, 30, 10, 0)
    assert out["status"].startswith(
        "done: the silhouette of the first sprite of your last Generate run, 30 points, seed 0, "
        "3 steps of ddpm (3 calls), heun (5 calls)"
    )
    with Image.open(out["picture"]) as im:
        assert im.format == "PNG" and im.width == im.height  # the field and two samplers: 2 x 2
    with Image.open(out["animation"]) as im:
        assert im.format == "GIF" and im.n_frames == TOY_FRAMES
    assert tab.first_look(out["picture"], "tiny", None, "ring", ["ddim"], 3, 30, 10, 0) == {}
    with pytest.raises(InputError, match="silhouette is empty"):
        tab.explore("tiny", sprite * 0, "sprite", ["ddim"], 2, 20, 10, 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"samplers": []}, "Tick at least one sampler."),
        ({"samplers": ["ddim", "heun", "plms", "lms", "ddpm"]}, "Tick at most 4 samplers (got 5)"),
        ({"samplers": ["magic"]}, "Unknown sampler 'magic'"),
        ({"shape": "heart"}, "Unknown shape 'heart'"),
        ({"steps": 0}, "Steps must be a whole number from 1 to 100 (got 0)"),
        ({"points": 5000}, "Points must be a whole number from 1 to 2000 (got 5000)"),
        ({"t": -1}, "t must be a number from 0 to 100 (got -1)"),
        ({"seed": 1.5}, "Seed must be a whole number from 0 to 4294967295 (got 1.5)"),
        (
            {"samplers": ["heun", "heun_churn", "ddim", "ddpm"], "steps": 100, "points": 2000},
            "That run needs 1,196,000 point-steps (2000 points × 598 denoiser calls)",
        ),
    ],
)
def test_the_tab_refuses_bad_input_with_a_message(tab: ToyTab, change: dict, message: str):
    args = {"shape": "ring", "samplers": ["ddim"], "steps": 3, "points": 30, "t": 10, "seed": 0}
    args.update(change)
    with pytest.raises(InputError, match=re.escape(message)):
        tab.explore("tiny", None, **args)
