"""Training end to end on a tiny synthetic dataset: outputs, exact resume, crash safety."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from diffusion import ContextUnet, Schedule, SpritePipeline, train
from diffusion.model import UnetConfig


@pytest.fixture
def data_dir(tmp_path):
    return toy_data(tmp_path)


def toy_data(root) -> Path:
    """A course-format folder under ``root``: 48 noisy 8x8 sprites of three colours, labelled."""
    rng = np.random.default_rng(0)
    n, k = 48, 3
    labels = np.arange(n) % k
    base = rng.integers(0, 256, (k, 8, 8, 3))
    images = np.clip(base[labels] + rng.integers(-20, 20, (n, 8, 8, 3)), 0, 255).astype(np.uint8)
    folder = root / "data"
    folder.mkdir()
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", np.eye(k, dtype=np.float32)[labels])
    (folder / "meta.json").write_text(json.dumps({"label_names": ["x", "y", "z"]}))
    (folder / "README.md").write_text("# toy\n\n## License and attribution\n\nToy art by Tester.\n")
    return folder


def log_rows(out) -> list[dict[str, str]]:
    """The rows of a run's loss.csv, with the file closed again."""
    with open(out / "loss.csv", newline="") as f:
        return list(csv.DictReader(f))


def args(data_dir, out, *extra):
    return ["--data", str(data_dir), "--out", str(out), "--channels", "8,16",
            "--batch-size", "16", "--warmup-steps", "2", *extra]  # fmt: skip


def test_run_folder_is_a_loadable_model(data_dir, tmp_path):
    out = tmp_path / "run"
    train.main(args(data_dir, out, "--epochs", "3", "--sample-every", "2"))
    rows = log_rows(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["loss"]) > 0 and float(r["images_per_s"]) > 0 for r in rows)
    assert (out / "samples" / "epoch0002.png").exists()
    assert (out / "samples" / "epoch0003_z.gif").exists()
    pipe = SpritePipeline.from_pretrained(out)
    assert pipe.labels == ["x", "y", "z"] and pipe.resolution == 8
    assert pipe.config["training"]["epochs_done"] == 3
    assert pipe.config["training"]["recipe"]["p_uncond"] == 0.1
    card = (out / "README.md").read_text()
    assert "Toy art by Tester" in card and "samples.png" in card
    # What ships is the EMA, not the raw weights.
    state = torch.load(out / "checkpoint.pt")
    shipped = safetensors.torch.load_file(out / "model.safetensors")
    torch.testing.assert_close(shipped["stem.weight"], state["ema"]["stem.weight"])
    assert not torch.equal(shipped["stem.weight"], state["model"]["stem.weight"])


def test_bf16_autocast_on_cpu_tracks_fp32(data_dir, tmp_path):
    # The shipped model trained with --amp on a CPU: bf16 matmuls, fp32 weights and loss.
    losses, weights = {}, {}
    for amp in ("off", "on"):
        out = tmp_path / amp
        train.main(args(data_dir, out, "--epochs", "2", "--sample-every", "9", "--amp", amp))
        losses[amp] = [float(r["loss"]) for r in log_rows(out)]
        assert json.loads((out / "config.json").read_text())["training"]["recipe"]["amp"] == amp
        weights[amp] = safetensors.torch.load_file(out / "model.safetensors")
        assert all(w.dtype == torch.float32 for w in weights[amp].values())
    np.testing.assert_allclose(losses["on"], losses["off"], rtol=0.03)
    on, off = weights["on"]["stem.weight"], weights["off"]["stem.weight"]
    assert not torch.equal(on, off)  # autocast really ran
    torch.testing.assert_close(on, off, atol=2e-3, rtol=0)


def test_resume_continues_exactly(data_dir, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train.main(args(data_dir, straight, "--epochs", "3", "--sample-every", "9"))

    crashed = tmp_path / "crashed"
    save = train.Trainer.save_checkpoint

    def save_then_crash(self):
        save(self)
        if self.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train.Trainer, "save_checkpoint", save_then_crash)
    every_epoch = ("--checkpoint-every", "0")
    with pytest.raises(KeyboardInterrupt):
        train.main(args(data_dir, crashed, "--epochs", "3", "--sample-every", "9", *every_epoch))
    monkeypatch.undo()
    with pytest.raises(SystemExit, match="already holds a run"):
        train.main(args(data_dir, crashed, "--epochs", "3"))
    train.main(args(data_dir, crashed, "--epochs", "3", "--sample-every", "9", "--resume"))

    a = torch.load(straight / "checkpoint.pt")
    b = torch.load(crashed / "checkpoint.pt")
    assert a["step"] == b["step"]
    for key in ("model", "ema"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0)


def test_sigkill_loses_at_most_one_epoch(data_dir, tmp_path):
    out = tmp_path / "killed"
    run = args(data_dir, out, "--checkpoint-every", "0", "--epochs", "400")
    cmd = [sys.executable, "-m", "diffusion.train", *run]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = out / "loss.csv"
        if log.exists() and len(log.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = len((out / "loss.csv").read_text().splitlines()) - 1
    state = torch.load(out / "checkpoint.pt")
    assert logged - 1 <= state["epoch"] <= logged
    resumed = subprocess.run(
        [*cmd[:-1], str(state["epoch"] + 1), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(out / "checkpoint.pt")["epoch"] == state["epoch"] + 1
    epochs = [int(r["epoch"]) for r in log_rows(out)]
    assert epochs == list(range(1, state["epoch"] + 2))


def test_class_balancing_and_lr_schedule():
    labels = np.array([0] * 90 + [1] * 10)
    w = train.sampling_weights(labels, 1.0)
    assert float(w[labels == 0].sum()) == pytest.approx(float(w[labels == 1].sum()))
    natural = train.sampling_weights(labels, 0.0)
    assert float(natural[labels == 0].sum() / natural.sum()) == pytest.approx(0.9)
    a = train.parse_args(["--data", "d", "--out", "o", "--warmup-steps", "10", "--lr", "1e-3"])
    assert train.lr_at(0, 110, a) == pytest.approx(1e-4)
    assert train.lr_at(10, 110, a) == pytest.approx(1e-3)
    assert train.lr_at(110, 110, a) == pytest.approx(1e-4)
    # A budgeted run anneals by the clock when its steps would outlast the budget.
    budget = train.parse_args(["--data", "d", "--out", "o", "--warmup-steps", "10", "--lr", "1e-3",
                               "--max-minutes", "2"])  # fmt: skip
    assert train.lr_at(60, 110, budget, elapsed=0.0) == pytest.approx(train.lr_at(60, 110, a))
    assert train.lr_at(60, 110, budget, elapsed=90.0) == pytest.approx(2.318e-4, rel=1e-3)
    assert train.lr_at(20, 110, budget, elapsed=120.0) == pytest.approx(1e-4)


def test_checkpoints_follow_the_clock_and_always_end_a_run(data_dir, tmp_path, monkeypatch):
    saved = []
    save = train.Trainer.save_checkpoint

    def counted(self):
        saved.append(self.epoch)
        save(self)

    monkeypatch.setattr(train.Trainer, "save_checkpoint", counted)
    train.main(args(data_dir, tmp_path / "a", "--epochs", "4", "--sample-every", "9"))
    assert saved == [1, 4]  # the first epoch, then none within the minute, then the last
    saved.clear()
    train.main(args(data_dir, tmp_path / "b", "--epochs", "4", "--checkpoint-every", "0"))
    assert saved == [1, 2, 3, 4]


def test_a_budgeted_run_stops_annealed(data_dir, tmp_path):
    out = tmp_path / "budget"
    train.main(args(data_dir, out, "--epochs", "100000", "--max-minutes", "0.05", "--lr", "1e-3"))
    rows = log_rows(out)
    assert 1 < len(rows) < 100000
    assert float(rows[-1]["elapsed_s"]) >= 3.0
    # The last epoch began within an epoch of the budget: its learning rate is near the floor
    # (--min-lr-ratio 0.1 of 1e-3), far below where the steps alone would have it.
    assert float(rows[-1]["lr"]) < 1.5e-4


def test_push_to_hub_uploads_the_folder(data_dir, tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, **kw):
            calls.append(("upload", repo_id, sorted(os.listdir(folder_path))))

    monkeypatch.setattr(train.push_to_hub.__globals__["huggingface_hub"], "HfApi", FakeApi)
    out = tmp_path / "pushed"
    train.main(args(data_dir, out, "--epochs", "1", "--push-to-hub", "me/sprites"))
    assert calls[0] == ("create", "me/sprites")
    assert calls[1][0] == "upload" and {"config.json", "model.safetensors"} <= set(calls[1][2])


def test_training_levers_reach_the_shipped_model(data_dir, tmp_path):
    out = tmp_path / "levers"
    levers = ["--prediction", "v", "--min-snr", "5", "--attention", "1", "--self-cond", "0.5"]
    train.main(
        args(data_dir, out, "--epochs", "2", "--sample-every", "9", "--split", "train", *levers)
    )
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["prediction"] == "v"
    assert config["model"]["attention"] == [1]
    assert config["model"]["self_condition"] is True
    recipe = config["training"]["recipe"]
    assert (recipe["min_snr"], recipe["self_cond"], recipe["split"]) == (5.0, 0.5, "train")
    # --split train leaves out the evaluator's held-out sprites: 48 -> 39 (3 labels x 13).
    assert sum(config["training"]["data"]["counts"].values()) == 39
    assert len(config["palette"]) >= 3  # the training palette ships with the model
    pipe = SpritePipeline.from_pretrained(out)
    assert pipe.model.config.self_condition and pipe.model.config.prediction == "v"
    assert pipe.generate("x", n=2, steps=3, seed=0, palette="data").shape == (2, 8, 8, 3)
    losses = [float(r["loss"]) for r in log_rows(out)]
    assert all(np.isfinite(losses))


def test_edm_preconditioning_trains_a_loadable_model(data_dir, tmp_path):
    with pytest.raises(SystemExit, match=r"^--min-snr: EDM preconditioning"):
        train.main(args(data_dir, tmp_path / "no", "--prediction", "edm", "--min-snr", "5"))
    out = tmp_path / "edm"
    edm = ["--prediction", "edm", "--noise-levels", "lognormal"]
    train.main(args(data_dir, out, "--epochs", "2", "--sample-every", "9", *edm))
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["prediction"] == "edm"
    assert config["training"]["recipe"]["noise_levels"] == "lognormal"
    pipe = SpritePipeline.from_pretrained(out)
    images = pipe.generate("x", n=2, steps=3, seed=0)
    assert images.shape == (2, 8, 8, 3) and images.std() > 0
    assert all(np.isfinite(float(r["loss"])) for r in log_rows(out))


def test_min_snr_changes_the_loss(data_dir, tmp_path):
    losses = {}
    for name, extra in {"plain": [], "min_snr": ["--min-snr", "1"]}.items():
        out = tmp_path / name
        train.main(args(data_dir, out, "--epochs", "1", "--sample-every", "9", *extra))
        losses[name] = float(log_rows(out)[0]["loss"])
    # Min-SNR with gamma 1 weighs every step with SNR > 1 down: the eps loss can only shrink.
    assert losses["min_snr"] < losses["plain"]


class Payload:
    """An object a malicious checkpoint might smuggle in."""


def test_a_checkpoint_holding_an_object_is_refused(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train.main(args(data_dir, out, "--epochs", "1", "--sample-every", "9"))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["payload"] = Payload()
    torch.save(state, out / "checkpoint.pt")
    # Even with torch's own default turned off by its environment variable.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(Exception, match="Weights only load failed"):
        train.main(args(data_dir, out, "--epochs", "2", "--resume"))


def test_torchrun_two_processes_match_one(data_dir, tmp_path):
    # Two CPU processes (gloo), each training on its half of every batch, follow the same path
    # as one process with the same global batch; only the first process writes the run folder.
    common = args(data_dir, tmp_path / "one", "--epochs", "2", "--sample-every", "100")
    train.main(common)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "diffusion.train", *args(data_dir, two, "--epochs", "2", "--sample-every", "100")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    one_w = safetensors.torch.load_file(tmp_path / "one" / "model.safetensors")
    two_w = safetensors.torch.load_file(two / "model.safetensors")
    # Summing in another order leaves up to 2.6e-5 (the reference on one thread); both processes
    # reading the same half of each batch instead leaves 1.7e-3.
    for name, weight in one_w.items():
        torch.testing.assert_close(two_w[name], weight, atol=5e-5, rtol=1e-4)
    # The logged losses are the whole batch's, as in one process.
    for a, b in zip(log_rows(tmp_path / "one"), log_rows(two), strict=True):
        assert abs(float(a["loss"]) - float(b["loss"])) < 1e-4
    assert len(log_rows(two)) == 2  # one writer, not two


def test_a_run_started_from_a_model_resumes_and_counts_all_steps(data_dir, tmp_path):
    images = np.load(data_dir / "images.npy")
    alpha = np.where((images == images[0, 0, 0]).all(-1), 0, 255).astype(np.uint8)
    np.save(data_dir / "rgba.npy", np.concatenate([images, alpha[..., None]], -1))
    first = tmp_path / "first"
    train.main(args(data_dir, first, "--epochs", "1", "--sample-every", "100"))
    config = json.loads((first / "config.json").read_text())
    # As measured for it, say:
    config["sampling"].update(precision="bf16", sampler="euler_churn", steps=7)
    config["sampling"]["sampler_steps"] = {"euler_churn": 7, "heun": 3}
    (first / "config.json").write_text(json.dumps(config))
    more = tmp_path / "more"
    # Dropout holds no weights: a continuation may add it.
    common = args(
        data_dir, more, "--init", str(first), "--alpha", "--sample-every", "100", "--dropout", "0.2"
    )
    train.main([*common, "--epochs", "1"])
    # --init is a path: the checkpoint must still load with weights_only=True.
    train.main([*common, "--epochs", "2", "--resume"])
    done = json.loads((more / "config.json").read_text())["training"]
    assert done["steps_done"] == 2 * 3 and done["total_steps"] == 3 + 2 * 3
    assert done["hardware"].startswith("CPU")
    pipe = SpritePipeline.from_pretrained(more)
    assert pipe.model.config.dropout == 0.2 and not pipe.model.training
    # Kept from the model it continued, saying so, but not the guidance: that is --guidance.
    assert pipe.rgba and pipe.defaults["precision"] == "bf16"
    assert (pipe.defaults["sampler"], pipe.defaults["steps"]) == ("euler_churn", 7)
    assert pipe.defaults["sampler_steps"] == {"euler_churn": 7, "heun": 3}
    assert pipe.defaults["measured_on"] == str(first)
    assert (
        f"measured with `python -m benchmarks.steps` on `{first}`"
        in (more / "README.md").read_text()
    )


def test_a_model_grown_with_self_attention_starts_as_it_was(tmp_path):
    """--init into a network with self-attention at more levels: the new attention starts as
    the identity, so the outputs are the old network's; taking attention away is refused."""
    fields = {"num_labels": 3, "resolution": 8, "channels": (8, 16), "emb_dim": 16}
    old = ContextUnet(UnetConfig(**fields, attention=(1,)))
    for p in old.parameters():  # zero-initialised layers made non-trivial
        torch.nn.init.normal_(p, std=0.1)
    SpritePipeline(old, Schedule.linear(T=50), ["a", "b", "c"]).save_pretrained(tmp_path / "old")
    grown = ContextUnet(UnetConfig(**fields, attention=(0, 1)))
    train.init_from(grown, tmp_path / "old")
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([5.0, 40.0]), torch.eye(3)[[0, 2]]
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, c), old(x, t, c), rtol=0, atol=1e-6)
        for name, p in grown.named_parameters():
            if ".attn.proj." in name:
                p.normal_(0, 0.1)
        assert not torch.allclose(grown(x, t, c), old(x, t, c), atol=1e-3)
    with pytest.raises(SystemExit, match="attention"):
        train.init_from(ContextUnet(UnetConfig(**fields)), tmp_path / "old")


def test_bad_data_is_one_line_naming_the_flag(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit, match=f"^--data: {missing}: no such dataset folder$"):
        train.main(["--data", str(missing), "--out", str(tmp_path / "run")])
    done = subprocess.run(
        [sys.executable, "-m", "diffusion.train", "--data", str(missing), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"--data: {missing}: no such dataset folder"]


def test_resume_with_other_flags_names_them(data_dir, tmp_path):
    out = tmp_path / "run"
    train.main(args(data_dir, out, "--epochs", "1", "--sample-every", "9"))
    resume = ["--data", str(data_dir), "--out", str(out), "--batch-size", "16", "--resume"]
    with pytest.raises(SystemExit, match=r"was trained with --channels 8,16 \(this run: 16,32\)"):
        train.main([*resume, "--channels", "16,32", "--epochs", "2"])
    other = tmp_path / "other"
    other.mkdir()
    for name in ("images.npy", "labels.npy", "meta.json", "README.md"):
        (other / name).write_bytes((data_dir / name).read_bytes())
    with pytest.raises(SystemExit, match=rf"--data {data_dir} \(this run: {other}\)"):
        train.main([*resume, "--data", str(other), "--channels", "8,16", "--epochs", "2"])
    # A checkpoint that does not say how it was trained still gets one line, not a size error.
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["args"]
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(SystemExit, match="holds another network than these flags build"):
        train.main([*resume, "--channels", "16,32", "--epochs", "2"])
