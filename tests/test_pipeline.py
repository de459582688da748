import json

import numpy as np
import pytest
import torch

from diffusion import SAMPLERS, Schedule, SpritePipeline
from diffusion import hub as hub_module
from diffusion.device import CPU_BF16_MIN_BATCH, default_device

from .conftest import LABELS


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_frames_stream_in_order(tiny_pipe, name):
    frames = list(tiny_pipe.stream("a", n=2, sampler=name, steps=7, seed=0))
    assert [f.step for f in frames] == list(range(1, 8))
    assert {f.total for f in frames} == {7}
    ts = [f.t for f in frames]
    assert ts == sorted(ts, reverse=True) and ts[-1] == 0 and ts[0] < 100
    assert frames[0].x.dtype == np.uint8 and frames[0].x.shape == (2, 8, 8, 3)


def test_model_calls_per_step(oracle_pipe):
    oracle = oracle_pipe.model
    oracle_pipe.generate("a", n=3, sampler="heun", steps=5, guidance=1.0, seed=0)
    assert oracle.calls == [3] * 9  # two calls a step, one on the last
    oracle.calls.clear()
    oracle_pipe.generate("a", n=3, sampler="ddim", steps=5, guidance=3.0, seed=0)
    assert oracle.calls == [6] * 5  # conditional and unconditional rows in one batch


def test_same_seed_same_pixels_other_seed_other_pixels(tiny_pipe):
    a = tiny_pipe.generate("b", n=2, sampler="ddpm", steps=10, seed=123)
    b = tiny_pipe.generate("b", n=2, sampler="ddpm", steps=10, seed=123)
    c = tiny_pipe.generate("b", n=2, sampler="ddpm", steps=10, seed=124)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unset_seed_is_reported_and_reproduces(tiny_pipe):
    frames = list(tiny_pipe.stream("a", n=1, sampler="euler_ancestral", steps=5))
    again = tiny_pipe.generate("a", n=1, sampler="euler_ancestral", steps=5, seed=frames[-1].seed)
    np.testing.assert_array_equal(frames[-1].x, again)


def test_ddim_eta_zero_depends_only_on_the_start(tiny_pipe):
    a = tiny_pipe.generate("c", n=2, sampler="ddim", steps=10, seed=5, eta=0.0)
    b = tiny_pipe.generate("c", n=2, sampler="ddim", steps=10, seed=5, eta=0.0)
    np.testing.assert_array_equal(a, b)
    noisy = tiny_pipe.generate("c", n=2, sampler="ddim", steps=10, seed=5, eta=1.0)
    assert not np.array_equal(a, noisy)


class _CondOnly(torch.nn.Module):
    """Wraps a model so it never sees the unconditional context."""

    def __init__(self, model, context):
        super().__init__()
        self.model, self.context = model, context

    def forward(self, x, t, context):
        return self.model(x, t, self.context.expand(len(x), -1))


def test_guidance_one_is_the_plain_conditional_model(oracle_pipe):
    ctx = torch.tensor([[0.0, 1.0, 0.0]])
    plain = SpritePipeline(
        _CondOnly(oracle_pipe.model, ctx), oracle_pipe.schedule, LABELS, resolution=8
    )
    a = oracle_pipe.generate("b", n=4, sampler="dpmpp_2m", steps=10, guidance=1.0, seed=9)
    b = plain.generate("b", n=4, sampler="dpmpp_2m", steps=10, guidance=1.0, seed=9)
    np.testing.assert_array_equal(a, b)


def test_guidance_extrapolates_from_unconditional_to_conditional(tiny_pipe):
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor(3.0)
    ctx = tiny_pipe.encode_context("a", 2)
    cond = tiny_pipe._denoiser(ctx, 1.0, {})(x, sigma)
    uncond = tiny_pipe._denoiser(torch.zeros_like(ctx), 1.0, {})(x, sigma)
    guided = tiny_pipe._denoiser(ctx, 2.5, {})(x, sigma)
    torch.testing.assert_close(guided, uncond + 2.5 * (cond - uncond), atol=1e-5, rtol=1e-4)


def test_every_step_count_is_accepted(tiny_pipe):
    for steps in range(1, tiny_pipe.schedule.T + 1):
        sigmas = tiny_pipe.schedule.sigmas(steps)
        assert len(sigmas) == steps + 1 and bool((sigmas[1:] < sigmas[:-1]).all())


def test_context_forms(tiny_pipe):
    enc = tiny_pipe.encode_context
    torch.testing.assert_close(enc("b", 1), torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(enc(2, 2), torch.tensor([[0.0, 0.0, 1.0]] * 2))
    torch.testing.assert_close(enc({"a": 0.5, "c": 0.5}, 1), torch.tensor([[0.5, 0.0, 0.5]]))
    torch.testing.assert_close(enc([0.2, 0.3, 0.5], 1), torch.tensor([[0.2, 0.3, 0.5]]))
    torch.testing.assert_close(enc(None, 1), torch.zeros(1, 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context": "dragon"}, "unknown label"),
        ({"context": 7}, "out of range"),
        ({"context": {"a": -1.0}}, "non-negative"),
        ({"context": [1.0, 0.0]}, "shape"),
        ({"sampler": "magic"}, "unknown sampler"),
        ({"steps": 0}, "between 1 and 100"),
        ({"steps": 101}, "between 1 and 100"),
        ({"steps": 2.5}, "integer"),
        ({"guidance": float("nan")}, "guidance"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"n": 0}, "n must"),
        ({"sampler": "heun", "eta": 0.5}, "takes no eta"),
        ({"sampler": "ddim", "eta": 2.0}, "eta must"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipe.generate(**{"context": "a", "steps": 3, **kwargs})


def test_save_and_load_round_trip(tiny_pipe, tmp_path):
    tiny_pipe.defaults["guidance"] = 1.5
    tiny_pipe.save_pretrained(tmp_path / "m", extra={"training": {"epochs_done": 3}})
    loaded = SpritePipeline.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.labels == LABELS and loaded.resolution == 8
    assert loaded.schedule.to_config() == tiny_pipe.schedule.to_config()
    assert loaded.defaults["guidance"] == 1.5 and loaded.config["training"]["epochs_done"] == 3
    # Written as a person writes JSON: indented, one line a key, ending in a newline.
    text = (tmp_path / "m" / "config.json").read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "')
    np.testing.assert_array_equal(
        loaded.generate("a", n=2, steps=5, seed=0), tiny_pipe.generate("a", n=2, steps=5, seed=0)
    )


def test_missing_folder_and_incomplete_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model folder"):
        SpritePipeline.from_pretrained(tmp_path / "nope" / "deeper" / "x")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({}))
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        SpritePipeline.from_pretrained(tmp_path / "half")


def test_hub_ids_download_with_huggingface_hub(tiny_pipe, tmp_path, monkeypatch):
    tiny_pipe.save_pretrained(tmp_path / "snapshot")
    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if repo_id != "someone/sprites":
            from huggingface_hub.errors import RepositoryNotFoundError

            raise RepositoryNotFoundError("404 Client Error: Repository Not Found")
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(hub_module.huggingface_hub, "snapshot_download", fake_download)
    pipe = SpritePipeline.from_pretrained("someone/sprites", device="cpu")
    assert pipe.labels == LABELS and calls[0][0] == "someone/sprites"
    assert "model.safetensors" in calls[0][1]["allow_patterns"]
    with pytest.raises(FileNotFoundError, match="neither a local model folder nor a model repo"):
        SpritePipeline.from_pretrained("someone/unknown")


def test_device_env_override(monkeypatch):
    monkeypatch.setenv("DIFFUSION_DEVICE", "meta")
    assert default_device() == torch.device("meta")
    monkeypatch.delenv("DIFFUSION_DEVICE")
    assert default_device().type in ("cpu", "cuda", "mps")


def test_schedule_travels_with_the_pipeline(tiny_pipe, tmp_path):
    tiny_pipe.schedule = Schedule.cosine(T=100)
    tiny_pipe.save_pretrained(tmp_path / "cos")
    assert SpritePipeline.from_pretrained(tmp_path / "cos").schedule.kind == "cosine"


def test_palette_stage_applies_to_the_last_frame(tiny_pipe, tmp_path):
    palette = np.array([[255, 255, 255], [0, 0, 0], [200, 40, 40]], np.uint8)
    tiny_pipe.palette = palette
    frames = list(tiny_pipe.stream("a", n=3, steps=4, seed=1, palette="data"))
    colours = {tuple(c) for c in frames[-1].x.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in palette}
    raw = tiny_pipe.generate("a", n=3, steps=4, seed=1)
    assert len({tuple(c) for c in raw.reshape(-1, 3)}) > 3  # the stage did the work
    # Earlier frames stream unchanged; k colours per sprite also works.
    assert np.array_equal(frames[0].x, next(tiny_pipe.stream("a", n=3, steps=4, seed=1)).x)
    for sprite in tiny_pipe.generate("a", n=3, steps=4, seed=1, palette=2):
        assert len(np.unique(sprite.reshape(-1, 3), axis=0)) <= 2
    # The palette travels with the model folder.
    tiny_pipe.save_pretrained(tmp_path / "m")
    assert SpritePipeline.from_pretrained(tmp_path / "m").palette.tolist() == palette.tolist()
    tiny_pipe.palette = None
    with pytest.raises(ValueError, match="training palette"):
        tiny_pipe.generate("a", steps=2, palette="data")


def test_start_noise_replaces_the_seeds_draw(tiny_pipe):
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    a = tiny_pipe.generate("a", n=2, steps=5, sampler="ddpm", seed=1, noise=x_T)
    b = tiny_pipe.generate("a", n=2, steps=5, sampler="ddpm", seed=1, noise=x_T.numpy())
    np.testing.assert_array_equal(a, b)
    # The seed's own first draw, given as noise, reproduces plain generation exactly.
    own = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    plain = tiny_pipe.generate("a", n=2, steps=5, sampler="dpmpp_2m", seed=3)
    given = tiny_pipe.generate("a", n=2, steps=5, sampler="dpmpp_2m", seed=3, noise=own)
    np.testing.assert_array_equal(plain, given)
    assert not np.array_equal(plain, tiny_pipe.generate("a", n=2, steps=5, seed=3, noise=x_T))
    with pytest.raises(ValueError, match=r"noise must be a float array of shape \(2, 3, 8, 8\)"):
        tiny_pipe.generate("a", n=2, steps=5, noise=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="finite"):
        tiny_pipe.generate("a", n=2, steps=5, noise=torch.full((2, 3, 8, 8), float("nan")))


def test_interpolate_morphs_between_two_ends(tiny_pipe):
    frames = tiny_pipe.interpolate(("a", 1), ("c", 2), frames=8, steps=6, guidance=2.0)
    assert frames.shape == (8, 8, 8, 3) and frames.dtype == np.uint8
    first = tiny_pipe.generate("a", n=1, steps=6, guidance=2.0, seed=1)[0]
    last = tiny_pipe.generate("c", n=1, steps=6, guidance=2.0, seed=2)[0]
    # The ends are plain generations (to rounding: batch sizes differ).
    assert np.abs(frames[0].astype(int) - first).max() <= 1
    assert np.abs(frames[-1].astype(int) - last).max() <= 1
    steps = [np.abs(np.diff(frames.astype(int), axis=0))[i].mean() for i in range(7)]
    ends = np.abs(frames[-1].astype(int) - frames[0]).mean()
    assert max(steps) < ends  # neighbours are closer than the two ends
    with pytest.raises(ValueError, match="deterministic sampler"):
        tiny_pipe.interpolate(("a", 1), ("c", 2), sampler="ddpm")
    with pytest.raises(ValueError, match="frames must be between 2 and 256"):
        tiny_pipe.interpolate(("a", 1), ("c", 2), frames=1)


def test_slerp_keeps_the_norm_of_orthogonal_unit_vectors():
    from diffusion.pipeline import slerp

    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, 0.5)
    torch.testing.assert_close(mid, torch.tensor([2**-0.5, 2**-0.5]))
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, a, 0.3), a)


def test_thread_policy_never_oversubscribes(monkeypatch):
    from diffusion import device

    for variable in ("DIFFUSION_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    for cores, runs, expected in [
        (2, 1, 2),
        (2, 2, 1),
        (2, 8, 1),
        (16, 1, 4),
        (16, 2, 4),
        (8, 4, 2),
    ]:
        monkeypatch.setattr(device.os, "sched_getaffinity", lambda _, c=cores: set(range(c)))
        assert device.cpu_threads(runs) == expected, (cores, runs)
        assert runs * device.cpu_threads(runs) <= max(cores, runs)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert device.cpu_threads(2) == 3
    monkeypatch.setenv("DIFFUSION_THREADS", "5")
    assert device.cpu_threads(2) == 5
    before = torch.get_num_threads()
    try:
        assert device.configure_cpu_threads(2) == 5 and torch.get_num_threads() == 5
    finally:
        torch.set_num_threads(before)


def test_each_sampler_runs_the_models_measured_step_count(tiny_pipe):
    tiny_pipe.defaults.update({"sampler": "dpmpp_2m", "steps": 7, "sampler_steps": {"ddim": 5}})
    assert len(list(tiny_pipe.stream(0))) == 7
    assert len(list(tiny_pipe.stream(0, sampler="ddim"))) == 5
    assert len(list(tiny_pipe.stream(0, sampler="lms"))) == SAMPLERS["lms"].default_steps
    assert len(list(tiny_pipe.stream(0, sampler="ddim", steps=3))) == 3


def test_bf16_precision_tracks_float32(tiny_pipe):
    fp32 = tiny_pipe.generate(0, n=4, steps=10, seed=3)
    tiny_pipe.defaults["precision"] = "bf16"
    if not tiny_pipe.bf16:
        pytest.skip("this CPU has no fast bf16, so the model's bf16 setting is not used")
    bf16 = tiny_pipe.generate(0, n=4, steps=10, seed=3)
    diff = np.abs(bf16.astype(int) - fp32)
    assert diff.max() > 0  # autocast really ran
    assert diff.mean() < 3  # and stayed within a few levels of float32


def test_a_bf16_model_runs_its_lone_calls_in_float32_on_a_cpu(tiny_pipe, monkeypatch):
    def sprite(guidance):
        return tiny_pipe.generate(0, n=1, steps=6, guidance=guidance, seed=3)

    fp32 = sprite(1.0), sprite(2.0)
    # Any CPU runs bf16 autocast (emulated where it has no bf16 kernels): the rule is the same.
    monkeypatch.setattr("diffusion.pipeline.bf16_is_fast", lambda device: True)
    tiny_pipe.defaults["precision"] = "bf16"
    assert CPU_BF16_MIN_BATCH == 2
    assert np.array_equal(sprite(1.0), fp32[0])  # one unguided sprite, a batch of 1: float32
    assert not np.array_equal(sprite(2.0), fp32[1])  # a guided pair: bf16
