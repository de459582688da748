"""Progressive distillation: the target's maths, a run end to end, and exact resume."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from diffusion import SpritePipeline, distill, train
from diffusion.samplers import ddim
from tests.test_train import args, toy_data


def test_one_student_step_lands_where_the_teacher_did():
    g = torch.Generator().manual_seed(0)
    x, x_teacher = torch.randn(4, 3, 8, 8, generator=g) * 5, torch.randn(4, 3, 8, 8, generator=g)
    for sigma, sigma_next in ((5.0, 2.0), (0.7, 0.0)):
        sigma, sigma_next = torch.tensor(sigma), torch.tensor(sigma_next)
        x0 = distill.one_step_target(x, x_teacher, sigma, sigma_next)

        def student(x_in, s, x0=x0):  # an eps model whose clean-image estimate is x0
            return (x_in - x0) / s

        ((x_student, _),) = ddim(student, x, torch.stack([sigma, sigma_next]), torch.randn)
        assert torch.allclose(x_student, x_teacher, atol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny teacher's data, the teacher, and its student distilled in one uninterrupted run."""
    root = tmp_path_factory.mktemp("distill")
    data = toy_data(root)
    train.main(args(data, root / "teacher", "--epochs", "2", "--T", "50", "--prediction", "v"))
    run(root / "teacher", data, root / "whole")
    return root, data


def run(teacher, data, out, *extra):
    distill.main(
        ["--teacher", str(teacher), "--data", str(data), "--out", str(out),
         "--teacher-steps", "8", "--steps", "2", "--iterations", "4", "--batch-size", "8",
         "--save-every", "2", *extra]
    )  # fmt: skip


def test_a_distilled_student_is_a_two_step_model(runs):
    root, _ = runs
    teacher, out = root / "teacher", root / "whole"
    pipe = SpritePipeline.from_pretrained(out)
    assert (pipe.defaults["sampler"], pipe.defaults["steps"], pipe.defaults["guidance"]) == (
        "ddim",
        2,
        1.0,
    )
    assert {p.name for p in (out / "rounds").iterdir()} == {"4steps", "2steps"}
    calls = []
    real = pipe.model.forward
    pipe.model.forward = lambda *a, **k: calls.append(len(a[0])) or real(*a, **k)
    images = pipe.generate("x", n=3, seed=1)
    assert images.shape == (3, 8, 8, 3) and calls == [3, 3]  # two unguided calls
    card = (out / "README.md").read_text()
    assert "Progressive distillation" in card and "Toy art by Tester" in card
    # Training moved the student away from its teacher.
    first = safetensors.torch.load_file(teacher / "model.safetensors")
    last = safetensors.torch.load_file(out / "model.safetensors")
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_a_killed_run_resumes_exactly(runs, tmp_path, monkeypatch):
    root, data = runs
    teacher, whole = root / "teacher", root / "whole"
    broken = tmp_path / "broken"
    real_step, calls = distill.Distiller.train_step, []

    def crash_in_round_two(self):
        calls.append(1)
        if len(calls) == 7:  # after round 1 and the checkpoint at step 2 of round 2
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(distill.Distiller, "train_step", crash_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        run(teacher, data, broken)
    monkeypatch.setattr(distill.Distiller, "train_step", real_step)
    with pytest.raises(SystemExit, match="--resume"):
        run(teacher, data, broken)
    run(teacher, data, broken, "--resume")
    a = safetensors.torch.load_file(whole / "model.safetensors")
    b = safetensors.torch.load_file(broken / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_step_counts_must_halve_to_the_target():
    with pytest.raises(SystemExit):
        distill.parse_args(["--teacher", "t", "--data", "d", "--out", "o", "--teacher-steps", "12"])


def test_a_text_teacher_distils_into_a_student_that_reads_prompts(tmp_path, monkeypatch):
    from diffusion.model import ContextUnet
    from tests.test_cross_attention import tiny_clip
    from tests.test_text import save_toy_dataset, toy_pairs

    data = tmp_path / "data"
    save_toy_dataset(data, *toy_pairs(2))
    tiny_clip().save_pretrained(tmp_path / "clip")
    train.main(args(data, tmp_path / "teacher", "--epochs", "1", "--T", "50", "--prediction", "v",
                    "--text-encoder", str(tmp_path / "clip"), "--cross-attention", "1",
                    "--cond-dropout", "0.1,0.2,0.1"))  # fmt: skip
    seen, real = [], ContextUnet.forward

    def spy(self, x, t, context, *rest, **words):
        seen.append(words)
        return real(self, x, t, context, *rest, **words)

    monkeypatch.setattr(ContextUnet, "forward", spy)
    run(tmp_path / "teacher", data, tmp_path / "student")
    # Every call of teacher and student read names: token states beside the pooled vector.
    assert seen and all(w.get("text") is not None and w.get("tokens") is not None for w in seen)
    named = torch.cat([w["token_mask"].any(1) for w in seen])
    assert 0.3 < named.float().mean() < 0.9  # names kept, and dropped or blank in the rest
    seen.clear()
    pipe = SpritePipeline.from_pretrained(tmp_path / "student")
    assert pipe.supports_text and pipe.model.config.cross_attention == (1,)
    assert pipe.generate("potion", n=2, prompt="red potion", seed=0).shape == (2, 8, 8, 3)
    assert len(seen) == 2 and all(w["token_mask"].any(1).all() for w in seen)  # 2 unguided calls


def test_the_first_teacher_stops_guiding_at_its_floor(runs, tmp_path, monkeypatch):
    import json
    import shutil

    from diffusion.model import ContextUnet

    root, data = runs
    teacher = tmp_path / "teacher"
    shutil.copytree(root / "teacher", teacher)
    config = json.loads((teacher / "config.json").read_text())
    schedule = SpritePipeline.from_pretrained(teacher).schedule
    # A floor at the top noise level: the teacher's defaults never guide.
    config["sampling"]["guidance_sigma_min"] = float(schedule.sigma(schedule.T))
    (teacher / "config.json").write_text(json.dumps(config))
    batches, real = [], ContextUnet.forward

    def spy(self, x, *rest, **words):
        batches.append(len(x))
        return real(self, x, *rest, **words)

    monkeypatch.setattr(ContextUnet, "forward", spy)
    run(teacher, data, tmp_path / "student")
    # Without the floor every teacher call is a guided pair: 16 rows for a batch of 8.
    assert batches and set(batches) == {8}
    assert SpritePipeline.from_pretrained(tmp_path / "student").defaults["guidance_sigma_min"] == 0
