"""Text guidance: a separate scale for the prompt, negative prompts, best of N, and the
evaluator's class-naming prompts. Each test spies on the network or compares exact pixels, so
that a branch left out (or a branch not used) fails it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import ContextUnet, Schedule, SpritePipeline
from diffusion.data import SpriteDataset
from diffusion.evaluate import CLASS_PROMPTS, evaluate_prompts, main
from diffusion.options import MAX_RERANK, MAX_SPRITES, SamplingOptions
from diffusion.text import ClipConfig, SpriteCLIP, train_tokenizer, words_of

LABELS = ["potion", "sword", "ring"]
NAMES = ["red potion", "blue potion", "golden sword", "rusty sword", "blue ring", "green ring"]
SPRITECLIP = Path(__file__).resolve().parents[1] / "weights" / "spriteclip"


def tiny_text_pipe() -> SpritePipeline:
    """An untrained 8x8 text model whose every weight is random, so that the text, the label
    and each branch of guidance change its output (a trained one starts its text at zero)."""
    torch.manual_seed(0)
    config = ClipConfig(vocab_size=60, width=32, layers=1, heads=2, embed_dim=16, resolution=8)
    words = {w for name in NAMES for w in words_of(name)}
    clip = SpriteCLIP(config, train_tokenizer(NAMES * 3, config.vocab_size), words).eval()
    model = ContextUnet(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16, text_dim=16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    for layer in (model.text_mlp[0], model.text_mlp[-1]):  # loud enough to change pixels
        torch.nn.init.normal_(layer.weight, std=1.0)
    return SpritePipeline(model, Schedule.linear(T=100), LABELS, device="cpu", text_encoder=clip)


@pytest.fixture(scope="module")
def pipe() -> SpritePipeline:
    return tiny_text_pipe()


class Spy:
    """Records what every network call sees: its contexts and texts, one row per branch."""

    def __init__(self, pipe: SpritePipeline) -> None:
        self.pipe, self.calls = pipe, []

    def __enter__(self) -> Spy:
        real = self.pipe.model.forward

        def spy(x, t, context, x0_prev=None, text=None):
            self.calls.append((context.clone(), None if text is None else text.clone()))
            return real(x, t, context, x0_prev, text)

        self.pipe.model.forward = spy
        return self

    def __exit__(self, *exc: object) -> None:
        del self.pipe.model.forward


def embedding(pipe: SpritePipeline, text: str) -> torch.Tensor:
    with torch.inference_mode():  # as in sampling: the transformer's fast path differs by 1e-8
        return pipe.encode_prompt(text, 1)[0]


RUN = {"steps": 3, "seed": 5, "sampler": "ddim"}


def test_dual_guidance_runs_three_branches_in_one_call(pipe):
    """guidance_text: (label, prompt), (label, no text), (no label, no text) in one batch."""
    red = embedding(pipe, "red potion")
    with Spy(pipe) as spy:
        pipe.generate("potion", prompt="red potion", guidance=2.0, guidance_text=3.0, **RUN)
    assert len(spy.calls) == 3  # one network call a step, every branch inside it
    context, text = spy.calls[0]
    assert len(context) == 3
    assert torch.equal(context[0], context[1]) and context[0].any() and not context[2].any()
    assert torch.equal(text[0], red) and not text[1].any() and not text[2].any()


def test_text_scale_zero_is_label_guidance_without_a_prompt(pipe):
    plain = pipe.generate("potion", guidance=2.0, **RUN)
    zero = pipe.generate("potion", prompt="red potion", guidance=2.0, guidance_text=0.0, **RUN)
    assert np.array_equal(zero, plain)
    pushed = pipe.generate("potion", prompt="red potion", guidance=2.0, guidance_text=4.0, **RUN)
    assert not np.array_equal(pushed, plain)
    # The text's scale is not the label's: swapping the two scales changes the sprites.
    swapped = pipe.generate("potion", prompt="red potion", guidance=4.0, guidance_text=2.0, **RUN)
    assert not np.array_equal(pushed, swapped)


def test_label_scale_one_is_guidance_by_the_text_alone(pipe):
    with Spy(pipe) as spy:
        dual = pipe.generate("potion", prompt="red potion", guidance=1.0, guidance_text=3.0, **RUN)
    assert len(spy.calls[0][0]) == 2  # (label, prompt) and (label, no text): nothing wasted
    text_only = pipe.generate("potion", prompt="red potion", guidance=3.0, guide="text", **RUN)
    assert np.array_equal(dual, text_only)


def test_guidance_adds_up_the_branches_as_documented(pipe):
    """The estimate of one step against the network's own outputs for each branch."""
    x, sigma = torch.randn(1, 3, 8, 8), torch.tensor(2.0)
    t = float(pipe.schedule.t_from_sigma(sigma))
    label = pipe.encode_context("potion", 1)
    with torch.inference_mode():
        red, blue = pipe.encode_prompt("red potion", 1), pipe.encode_prompt("blue ring", 1)

        def eps(context, text):
            model_in = x / (1 + sigma**2).sqrt()
            return pipe.model(model_in, torch.full((1,), t), context, text=text)

        none = torch.zeros_like(label)
        g_l, g_t = 2.0, 3.0
        expected = (
            eps(none, blue)
            + g_l * (eps(label, blue) - eps(none, blue))
            + g_t * (eps(label, red) - eps(label, blue))
        )
        red_words, blue_words = pipe._words("red potion", 1), pipe._words("blue ring", 1)
        denoise = pipe._denoiser(label, g_l, {}, red_words, guidance_text=g_t, negative=blue_words)
        torch.testing.assert_close(denoise(x, sigma), expected, rtol=1e-4, atol=1e-5)


def test_the_negative_prompt_takes_the_place_of_no_text(pipe):
    red, dark = embedding(pipe, "red potion"), embedding(pipe, "blue ring")
    with Spy(pipe) as spy:
        steered = pipe.generate(
            "potion", prompt="red potion", negative_prompt="blue ring", guidance=3.0, **RUN
        )
    context, text = spy.calls[0]
    assert len(context) == 2 and not context[1].any()
    assert torch.equal(text[0], red) and torch.equal(text[1], dark)
    assert not np.array_equal(
        steered, pipe.generate("potion", prompt="red potion", guidance=3.0, **RUN)
    )
    # Dual guidance: both branches without the prompt see the negative text.
    with Spy(pipe) as spy:
        pipe.generate(
            "potion", prompt="red potion", negative_prompt="blue ring",
            guidance=2.0, guidance_text=3.0, **RUN,
        )  # fmt: skip
    _, text = spy.calls[0]
    assert torch.equal(text[0], red) and torch.equal(text[1], dark) and torch.equal(text[2], dark)
    # Without a prompt: the conditional branch has no text, the other the negative one.
    with Spy(pipe) as spy:
        pipe.generate("potion", negative_prompt="blue ring", guidance=3.0, **RUN)
    _, text = spy.calls[0]
    assert not text[0].any() and torch.equal(text[1], dark)


def test_edits_and_morphs_take_text_guidance(pipe):
    dark = embedding(pipe, "blue ring")
    sprite = pipe.generate("ring", seed=1, steps=2)[0]
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    for edit in ({"image": sprite, "strength": 0.6}, {"image": sprite, "mask": mask}):
        with Spy(pipe) as spy:
            out = pipe.generate(
                "potion", prompt="red potion", negative_prompt="blue ring",
                guidance=2.0, guidance_text=3.0, **edit, **RUN,
            )  # fmt: skip
        assert spy.calls and all(torch.equal(text[2], dark) for _, text in spy.calls)
        if "mask" in edit:  # the known pixels stay exactly
            assert np.array_equal(out[0][~mask], sprite[~mask])
    ends = (("potion", 1), ("ring", 2))
    morph = {"frames": 3, "steps": 3, "sampler": "ddim", "prompt": "red potion", "guidance": 2.0}
    with Spy(pipe) as spy:
        a = pipe.interpolate(*ends, negative_prompt="blue ring", guidance_text=3.0, **morph)
    assert torch.equal(spy.calls[0][1][-1], dark)  # rows: 3 frames x 3 branches
    assert not np.array_equal(a, pipe.interpolate(*ends, guidance_text=3.0, **morph))
    assert np.array_equal(
        pipe.interpolate(*ends, guidance_text=0.0, **morph),
        pipe.interpolate(*ends, **{k: v for k, v in morph.items() if k != "prompt"}),
    )


def test_best_of_n_keeps_the_candidate_spriteclip_scores_highest(pipe):
    run = {"prompt": "red potion", "guidance": 2.0, **RUN}
    candidates = pipe.generate("potion", n=6, **run)  # the same draws: 2 sprites x 3 candidates
    scores = pipe.text_encoder.score(candidates, ["red potion"]).numpy().reshape(2, 3)
    best = scores.argmax(1) + 3 * np.arange(2)
    frames = list(pipe.stream("potion", n=2, rerank=3, **run))
    assert all(len(f.x) == 6 for f in frames[:-1])  # every candidate, while drawing
    last = frames[-1]
    assert np.array_equal(last.picked, best) and not np.array_equal(best, [0, 3])
    assert np.array_equal(last.x, candidates[best])
    np.testing.assert_allclose(last.scores, scores.max(1), rtol=1e-5)
    assert np.array_equal(pipe.generate("potion", n=2, rerank=3, **run), candidates[best])
    # rerank=1 is the plain run, which still reports its score.
    plain = list(pipe.stream("potion", n=2, **run))[-1]
    assert plain.picked is None and np.array_equal(plain.x, candidates[[0, 1]])
    # One prompt per sprite: each candidate is scored against its own sprite's prompt.
    two = ["red potion", "blue ring"]
    each = pipe.generate("potion", n=2, rerank=2, prompt=two, guidance=2.0, steps=3, seed=5)
    drawn = pipe.generate("potion", n=4, prompt=[two[0]] * 2 + [two[1]] * 2, guidance=2.0,
                          steps=3, seed=5)  # fmt: skip
    own = pipe.text_encoder.score(drawn, [two[0]] * 2 + [two[1]] * 2).numpy().reshape(2, 2)
    assert np.array_equal(each, drawn[own.argmax(1) + np.array([0, 2])])


def test_best_of_n_in_edits(pipe):
    sprite = pipe.generate("ring", seed=1, steps=2)[0]
    mask = np.zeros((8, 8), bool)
    mask[:4] = True
    out = list(pipe.stream("ring", n=2, image=sprite, mask=mask, rerank=2, prompt="blue ring",
                           guidance=2.0, steps=3, seed=3))  # fmt: skip
    assert out[-1].x.shape == (2, 8, 8, 3) and out[0].x.shape == (4, 8, 8, 3)
    assert (out[-1].x[:, ~mask] == sprite[~mask]).all()


def test_bad_text_guidance_is_refused(pipe, tiny_pipe):
    red, noise = {"prompt": "red potion"}, np.zeros((1, 3, 8, 8), np.float32)
    cases = [
        ({"guidance_text": 2.0}, "guidance_text= scales the prompt"),
        ({**red, "guidance_text": 11.0}, "guidance_text must be a number"),
        ({**red, "guidance_text": 2.0, "guide": "text"}, "guide='both'"),
        ({**red, "negative_prompt": "  ", "guidance": 2.0}, "negative_prompt is empty"),
        ({**red, "negative_prompt": "blue", "guidance": 1.0}, "guidance 1"),
        ({**red, "negative_prompt": "blue", "guide": "label", "guidance": 2.0}, "guide='label'"),
        ({**red, "rerank": 0}, f"rerank must be 1 to {MAX_RERANK}"),
        ({**red, "rerank": True}, "whole number"),
        ({"rerank": 2}, "give a prompt="),
        ({**red, "rerank": MAX_RERANK, "n": MAX_SPRITES // 2}, "at most"),
        ({**red, "rerank": 2, "noise": noise}, "noise"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe.generate("potion", steps=2, **options)
    with pytest.raises(ValueError, match="takes no negative_prompt"):
        tiny_pipe.generate(0, negative_prompt="red", guidance=2.0, steps=2)
    with pytest.raises(ValueError, match="no candidates to rerank"):
        pipe.interpolate(("potion", 1), ("ring", 2), frames=2, prompt="red", rerank=2)


def test_best_of_n_costs_n_runs():
    options = SamplingOptions(sampler="ddim", steps=10)
    assert SamplingOptions(sampler="ddim", steps=10, rerank=4).work(2) == 4 * options.work(2)


def test_the_command_line_takes_text_guidance(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "m")
    cmd = [sys.executable, "-m", "diffusion", "sample", "--model", str(tmp_path / "m"),
           "--label", "potion", "--prompt", "red potion", "--negative-prompt", "blue ring",
           "--guidance", "2", "--guidance-text", "3", "--rerank", "3", "--n", "2",
           "--steps", "3", "--sampler", "ddim", "--seed", "5", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "best of 3" in done.stderr
    bad = subprocess.run([*cmd[:-2], "--rerank", "99"], capture_output=True, text=True)
    assert bad.returncode == 2 and f"rerank must be 1 to {MAX_RERANK}" in bad.stderr


# -- the evaluator's class-naming prompts ------------------------------------------------------


def test_class_prompts_use_words_of_their_labels_training_names():
    """Each kept prompt's words occur in training names: SpriteCLIP (trained on the names of
    the training split) knows them all."""
    words = set(json.loads((SPRITECLIP / "config.json").read_text())["words"])
    assert len(CLASS_PROMPTS) == 6 and all(len(p) >= 3 for p in CLASS_PROMPTS.values())
    for prompts in CLASS_PROMPTS.values():
        for prompt in prompts:
            assert 1 <= len(prompt.split()) <= 2 and set(prompt.split()) <= words, prompt


def coloured_sprites(per_label: int = 30, seed: int = 0) -> SpriteDataset:
    """8x8 sprites on white, a square whose colour is the label: red, blue or green."""
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 30, 30], [30, 30, 200], [30, 160, 30]])
    images = np.full((3 * per_label, 8, 8, 3), 255, np.uint8)
    for i in range(len(images)):
        r, c = rng.integers(0, 4, 2)
        images[i, r : r + 4, c : c + 4] = colours[i // per_label] + rng.integers(0, 40, 3)
    return SpriteDataset(
        images, np.repeat(np.arange(3), per_label), ["red", "blue", "green"], "toy"
    )


class PromptFollower:
    """A stand-in text model that draws the data's sprites of whichever label its prompt
    names, and with no prompt always the first label's: a perfect and a blind model."""

    supports_text = True
    text_encoder = None

    def __init__(self, data: SpriteDataset) -> None:
        self.data = data

    def generate(self, context, n, prompt=None, seed=0, **_):
        rng = np.random.default_rng(seed)
        names = [prompt] * n if isinstance(prompt, str) or prompt is None else prompt
        labels = [0 if p is None else self.data.label_names.index(p.split()[-1]) for p in names]
        return np.stack([self.data.images[rng.choice(np.flatnonzero(self.data.labels == k))]
                         for k in labels])  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One classifier cache for the module: the toy data's classifier is trained once."""
    return tmp_path_factory.mktemp("classifier")


def test_prompt_share_is_the_classifiers_verdict(cache):
    data = coloured_sprites()
    prompts = {"red": ["bright red"], "blue": ["deep blue"], "green": ["grass green"]}
    report = evaluate_prompts(PromptFollower(data), data, prompts=prompts, cache_dir=cache)
    assert report["share"] >= 0.9 and report["labels"]["blue"] >= 0.9
    # With no prompt it draws red: right for the red prompts only.
    assert report["no_prompt_share"] == pytest.approx(report["labels"]["red"] / 3, abs=0.1)
    wrong = {"red": ["deep blue"], "blue": ["grass green"], "green": ["bright red"]}
    assert (
        evaluate_prompts(PromptFollower(data), data, prompts=wrong, cache_dir=cache)["share"] <= 0.1
    )
    with pytest.raises(ValueError, match="name labels of the data"):
        evaluate_prompts(PromptFollower(data), data, prompts={"purple": ["x"]}, cache_dir=cache)


def test_evaluate_command_measures_class_prompts(pipe, cache, tmp_path, capsys):
    data = coloured_sprites()
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "images.npy", data.images)
    np.save(folder / "labels.npy", np.eye(3, dtype=np.float32)[data.labels])
    (folder / "meta.json").write_text(json.dumps({"label_names": data.label_names}))
    model = SpritePipeline(pipe.model, pipe.schedule, data.label_names, device="cpu",
                           text_encoder=pipe.text_encoder)  # fmt: skip
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "prompts.json").write_text(
        json.dumps({"red": ["red potion"], "blue": ["blue ring"], "green": ["green ring"]})
    )
    args = [str(tmp_path / "m"), "--data", str(folder), "--prompts", str(tmp_path / "prompts.json"),
            "--text-only", "--per-prompt", "2", "--steps", "2", "--guidance-text", "2",
            "--rerank", "2", "--seed", "0", "--cache", str(cache),
            "--json", str(tmp_path / "r.json")]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "r.json").read_text())["class_prompts"]
    assert set(report["prompts"]) == {"red potion", "blue ring", "green ring"}
    assert report["options"]["rerank"] == 2 and 0 <= report["own_of_3"] <= 1
    assert "prompts without a label" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "m"), "--data", str(folder), "--rerank", "2"])


# -- the app -----------------------------------------------------------------------------------


def test_the_app_runs_text_guidance_and_says_what_guided(tmp_path):
    import gradio as gr

    from tests.test_app import editor_value, final, run, tiny_text_pipeline
    from ui import run as uirun
    from ui.edit import EditTab
    from ui.morph import MorphTab
    from ui.storage import OutputStore
    from ui.studio import Studio

    text_pipe = tiny_text_pipeline()
    studio = Studio({"text": text_pipe}, OutputStore(tmp_path / "out"))
    best = final(run(studio, n=2, steps=4, prompt="red potion", negative_prompt="blue potion",
                     guidance_text=3, rerank=3))  # fmt: skip
    status = best["status"]
    assert 'guidance label 2, text 3 · away from "blue potion" · best of 3 by' in status
    assert "SpriteCLIP score" in status
    expected = text_pipe.generate("hero", n=2, sampler="ddim", steps=4, guidance=2.0, seed=0,
                                  prompt="red potion", negative_prompt="blue potion",
                                  guidance_text=3.0, rerank=3)  # fmt: skip
    assert np.array_equal(best["sprites"], expected)
    with Image.open(best["gif"]) as gif:  # the GIF follows the 2 candidates kept, not all 6
        assert gif.size == Image.open(best["sheet"]).size
    one = final(run(studio, n=2, steps=4, prompt="red potion", label=None))["status"]
    assert "guidance 2 (text)" in one
    nothing = final(run(studio, n=2, steps=4, label=None))["status"]
    assert "· unguided ·" in nothing and "guidance" not in nothing
    args = {"label": "hero", "sampler": "ddim", "steps": 4, "guidance": 2, "seed": 0, "n": 2}
    refusals = [
        ({"guidance_text": 3}, "Text guidance scales the prompt"),
        ({"prompt": "red potion", "guidance_text": 12}, "Text guidance must be"),
        ({"prompt": "red potion", "negative_prompt": "blue", "guidance": 1}, "works through"),
        ({"rerank": 2}, "Best of N keeps the candidate"),
        ({"prompt": "red potion", "rerank": 99}, "Best of must be a whole number from 1 to 16"),
    ]
    for change, message in refusals:
        with pytest.raises(gr.Error, match=message):
            uirun.validate_request(text_pipe, **{**args, **change})
    sprite = text_pipe.generate("hero", n=1, seed=3, steps=5)[0]
    edited = final(list(EditTab(studio).edit(
        editor_value(sprite), "food", 0.6, "ddim", 4, 2.0, 1, 2, prompt="red potion",
        negative_prompt="blue potion", guidance_text=3, rerank=2,
    )))  # fmt: skip
    assert 'away from "blue potion" · best of 2' in edited["status"]
    morph = list(
        MorphTab(studio).morph(
            "hero",
            1,
            "food",
            2,
            3,
            "ddim",
            4,
            2.0,
            prompt="red ant",
            negative_prompt="blue",
            guidance_text=3,
        )
    )
    assert 'text 3 · away from "blue"' in morph[-1]["status"]
