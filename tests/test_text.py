"""Text-to-sprite: SpriteCLIP's tokenizer, loss and retrieval; prompts through the pipeline."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from diffusion import SpritePipeline, train
from diffusion.data import load_dataset, name_from_path
from diffusion.pipeline import UnknownWordsWarning
from diffusion.text import (
    ClipConfig,
    SpriteCLIP,
    clip_loss,
    halve_sprites,
    mirror_name,
    paraphrases,
    retrieval,
    train_clip,
    train_tokenizer,
)
from diffusion.text import (
    main as spriteclip_main,
)

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 200, 60)}
SHAPES = ("potion", "sword", "ring")


def toy_pairs(repeats: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """8x8 sprites whose colour and shape are what their names say: 'red potion' and so on."""
    rng = np.random.default_rng(seed)
    images, names = [], []
    masks = {
        "potion": np.pad(np.ones((4, 4), bool), 2),
        "sword": np.eye(8, dtype=bool) | np.eye(8, k=1, dtype=bool),
        "ring": np.pad(np.pad(np.zeros((2, 2), bool), 1, constant_values=True), 2),
    }
    for _ in range(repeats):
        for colour, rgb in COLOURS.items():
            for shape in SHAPES:
                img = np.full((8, 8, 3), 255, np.int64)
                img[masks[shape]] = rgb
                img = img + rng.integers(-10, 10, img.shape)
                images.append(np.clip(img, 0, 255).astype(np.uint8))
                names.append(f"{colour} {shape}")
    return np.stack(images), names


def save_toy_dataset(folder, images: np.ndarray, names: list[str], **meta) -> None:
    """``images`` of :func:`toy_pairs` as a dataset folder, labelled by shape; ``meta`` is
    meta.json's (sprite "names" by default)."""
    folder.mkdir()
    labels = np.array([SHAPES.index(name.split()[1]) for name in names])
    np.save(folder / "images.npy", images)
    np.save(folder / "labels.npy", np.eye(3, dtype=np.float32)[labels])
    meta = meta or {"names": names}
    (folder / "meta.json").write_text(json.dumps({"label_names": list(SHAPES), **meta}))


@pytest.fixture(scope="module")
def toy_clip() -> tuple[SpriteCLIP, list[float]]:
    images, names = toy_pairs()
    losses: list[float] = []
    config = ClipConfig(vocab_size=60, width=32, layers=1, heads=2, embed_dim=16, resolution=8)
    clip = train_clip(
        images,
        names,
        config=config,
        epochs=60,
        batch_size=18,
        lr=3e-3,
        log=lambda epoch, loss: losses.append(loss),
    )
    return clip, losses


def test_tokenizer_round_trips_and_splits_unseen_words():
    tokenizer = train_tokenizer(["fire ant", "red potion", "dark snowy oak"] * 5, 60)
    for text in ("fire ant", "Red Potion", "dark snowy oak"):
        assert tokenizer.decode(tokenizer.encode(text).ids) == text.lower()
    # An unseen word is read as pieces, not dropped or turned into one unknown token.
    tokens = tokenizer.encode("redoak").tokens
    assert len(tokens) >= 2 and "[UNK]" not in tokens
    assert tokenizer.decode(tokenizer.encode("redoak").ids) == "redoak"


def test_unknown_words_are_named(toy_clip):
    clip, _ = toy_clip
    assert clip.unknown_words("red potion") == []
    assert clip.unknown_words("Purple potion of doom") == ["purple", "of", "doom"]
    assert mirror_name("dark wall left nw") == "dark wall right ne"


def test_clip_loss_falls_and_retrieval_beats_chance(toy_clip):
    clip, losses = toy_clip
    assert losses[-1] < 0.5 * losses[0]
    images, names = toy_pairs(repeats=1, seed=1)  # new noise: pairs it has not seen
    scores = retrieval(clip, images, names, candidates=5)
    assert scores["image_to_text"] >= 0.5 > scores["chance_all"] * 4
    assert scores["of_5"] >= 0.8
    logits = torch.eye(4) * 10
    assert float(clip_loss(logits)) < 1e-3 < float(clip_loss(torch.zeros(4, 4)))


def test_clip_round_trips_through_its_folder(toy_clip, tmp_path):
    clip, _ = toy_clip
    clip.save_pretrained(tmp_path / "clip")
    again = SpriteCLIP.from_pretrained(tmp_path / "clip")
    torch.testing.assert_close(again.encode_text(["blue ring"]), clip.encode_text(["blue ring"]))
    with pytest.raises(ValueError, match="at most"):
        clip.encode_text(["red " * 40])


@pytest.fixture(scope="module")
def text_pipe(toy_clip, tmp_path_factory) -> SpritePipeline:
    """A small text model: fine-tuned with --init from a label model, as the shipped one."""
    clip, _ = toy_clip
    root = tmp_path_factory.mktemp("text")
    images, names = toy_pairs()
    folder = root / "data"
    save_toy_dataset(folder, images, names)
    clip.save_pretrained(root / "clip")
    common = ["--data", str(folder), "--channels", "8,16", "--batch-size", "12",
              "--warmup-steps", "2", "--epochs", "2", "--sample-every", "99"]  # fmt: skip
    train.main([*common, "--out", str(root / "label")])
    train.main(
        [*common, "--out", str(root / "text"), "--init", str(root / "label"),
         "--text-encoder", str(root / "clip")]
    )  # fmt: skip
    return SpritePipeline.from_pretrained(root / "text")


def test_dataset_carries_names(text_pipe):
    data = load_dataset(text_pipe.config["training"]["data"]["source"])
    assert data.names[:2] == ["red potion", "red sword"]
    assert data.subset([4, 1]).names == ["blue sword", "red sword"]


def test_text_model_starts_as_its_label_model(text_pipe):
    config = text_pipe.config["training"]["recipe"]
    assert config["init"].endswith("label") and config["text_encoder"].endswith("clip")
    assert text_pipe.supports_text and text_pipe.model.config.text_dim == 16
    assert (
        SpritePipeline.from_pretrained(config["init"]).model.state_dict()["stem.weight"].shape
        == text_pipe.model.state_dict()["stem.weight"].shape
    )


def test_prompt_guidance_one_is_the_text_conditional_model(text_pipe):
    """At guidance 1 the sampler sees exactly the network's output for (label, prompt)."""
    pipe = text_pipe
    with torch.inference_mode():  # as in sampling: the transformer's fast path differs by 1e-8
        text = pipe.encode_prompt("red potion", 1)
    seen = []
    real_forward = pipe.model.forward

    def spy(x, t, context, x0_prev=None, text=None):
        seen.append((context.clone(), None if text is None else text.clone()))
        return real_forward(x, t, context, x0_prev, text)

    pipe.model.forward = spy
    try:
        a = pipe.generate("potion", prompt="red potion", guidance=1.0, steps=3, seed=5)
        assert all(len(c) == 1 and torch.equal(t, text) for c, t in seen)
        seen.clear()
        pipe.generate("potion", prompt="red potion", guidance=3.0, steps=3, seed=5)
        context, both = seen[0]
        # Guided: a second half with the label and the text dropped ("both").
        assert len(context) == 2 and not context[1].any() and not both[1].any()
        seen.clear()
        pipe.generate("potion", prompt="red potion", guidance=3.0, steps=3, seed=5, guide="text")
        context, texts = seen[0]
        assert torch.equal(context[0], context[1]) and not texts[1].any()
        seen.clear()
        pipe.generate("potion", prompt="red potion", guidance=3.0, steps=3, seed=5, guide="label")
        context, texts = seen[0]
        assert not context[1].any() and torch.equal(texts[0], texts[1])
    finally:
        del pipe.model.forward
    b = pipe.generate("potion", prompt="red potion", guidance=1.0, steps=3, seed=5)
    assert np.array_equal(a, b)
    # The network's output follows the text (two epochs leave the text branch near its zero
    # start, so it is made to matter here).
    loud = copy.deepcopy(pipe.model)
    torch.nn.init.normal_(loud.text_mlp[-1].weight, std=1.0)
    x, t, label = torch.randn(1, 3, 8, 8), torch.tensor([50.0]), torch.tensor([[1.0, 0, 0]])
    with torch.no_grad():
        red, blue = (loud(x, t, label, text=pipe.encode_prompt(p, 1)) for p in ("red", "blue"))
        plain = loud(x, t, label)
    assert not torch.allclose(red, blue, atol=1e-5) and not torch.allclose(red, plain, atol=1e-5)


def test_prompt_works_with_every_sampler_and_editing(text_pipe):
    from diffusion import SAMPLERS

    for sampler in SAMPLERS:
        out = text_pipe.generate("ring", prompt="blue ring", sampler=sampler, steps=3, seed=1)
        assert out.shape == (1, 8, 8, 3)
    image = toy_pairs(1)[0][0]
    varied = text_pipe.generate(
        "potion", prompt="green potion", image=image, strength=0.5, steps=4, seed=1
    )
    assert varied.shape == (1, 8, 8, 3)
    morph = text_pipe.interpolate(("potion", 1), ("ring", 2), frames=3, steps=3, prompt="red ring")
    assert morph.shape == (3, 8, 8, 3)


def test_unseen_words_are_reported_not_dropped(text_pipe):
    assert text_pipe.unknown_words("purple potion") == ["purple"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text_pipe.generate("potion", prompt="purple potion", steps=2, seed=0)
    assert any(
        issubclass(w.category, UnknownWordsWarning) and "purple" in str(w.message) for w in caught
    )


def test_bad_prompts_are_refused(text_pipe, tiny_pipe):
    with pytest.raises(ValueError, match="trained on labels only"):
        tiny_pipe.generate(0, prompt="red potion", steps=2)
    with pytest.raises(ValueError, match="empty"):
        text_pipe.generate("potion", prompt="   ", steps=2)
    with pytest.raises(ValueError, match="guide"):
        text_pipe.generate("potion", prompt="red potion", steps=2, guide="colour")
    with pytest.raises(ValueError, match="needs a prompt"):
        text_pipe.generate("potion", steps=2, guide="text")
    with pytest.raises(ValueError, match="list of 2"):
        text_pipe.generate("potion", n=2, prompt=["a", "b", "c"], steps=2)


def test_a_text_model_comes_from_the_hub_with_its_encoder(text_pipe, tmp_path, monkeypatch):
    """The download asks for the text encoder's files too (huggingface_hub's allow_patterns)."""
    import fnmatch
    import shutil

    from diffusion import hub

    text_pipe.save_pretrained(tmp_path / "repo")

    def fake_download(repo_id, allow_patterns, **kwargs):
        snapshot = tmp_path / "snapshot"
        for path in (tmp_path / "repo").rglob("*"):
            name = path.relative_to(tmp_path / "repo").as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, snapshot / name)
        return str(snapshot)

    monkeypatch.setattr(hub.huggingface_hub, "snapshot_download", fake_download)
    pipe = SpritePipeline.from_pretrained("someone/text-sprites", device="cpu")
    assert pipe.supports_text and pipe.unknown_words("purple potion") == ["purple"]
    a = pipe.generate("potion", prompt="red potion", steps=3, seed=2)
    assert np.array_equal(a, text_pipe.generate("potion", prompt="red potion", steps=3, seed=2))


def test_cond_dropout_trains_each_branch_guidance_uses():
    """--cond-dropout draws one branch per example: neither, text only, label only or both."""
    from types import SimpleNamespace

    from diffusion.train import Trainer, _cond_dropout

    n = 20_000
    fake = SimpleNamespace(
        generator=torch.Generator().manual_seed(0),
        args=SimpleNamespace(
            p_alt_frame=0.0, flip=False, p_uncond=0.5, p_uncond_text=0.5,
            cond_dropout=_cond_dropout("0.1,0.2,0.1"),
        ),
        images=torch.zeros(n, 1, 2, 2), alt=torch.zeros(n, 1, 2, 2),
        labels=torch.randint(0, 3, (n,)), data=SimpleNamespace(num_labels=3), vae=None,
        text=(torch.ones(n, 4), torch.ones(n, 4)), tokens=None,
    )  # fmt: skip
    _, context, text = Trainer.batch(fake, torch.arange(n))
    label_kept, text_kept = context.any(1), text["text"].any(1)
    shares = {
        "neither": (~label_kept & ~text_kept).float().mean().item(),
        "text only": (~label_kept & text_kept).float().mean().item(),
        "label only": (label_kept & ~text_kept).float().mean().item(),
        "both": (label_kept & text_kept).float().mean().item(),
    }
    expected = {"neither": 0.1, "text only": 0.2, "label only": 0.1, "both": 0.6}
    assert all(abs(shares[k] - expected[k]) < 0.015 for k in expected), shares
    with pytest.raises(argparse.ArgumentTypeError, match="three shares"):
        _cond_dropout("0.5,0.5,0.5")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("releases/Nov-2015/mon/dragons/dragon_red.png", "red dragon"),
        ("dngn/wall/stone_dark1.png", "dark stone wall"),
        ("item/ring/ruby.png", "ruby ring"),
        ("item/weapon/artefact/urand_elemental.png", "elemental artefact"),
        ("item/weapon/morningstar3.png", "morningstar"),
        ("dngn/floor/grey_dirt_b_0.png", "grey dirt floor"),
        ("player\\base\\draconian_purple_m.png", "purple draconian"),
        ("mon/unique/x1.png", "unique"),  # nothing left of the file: its folder names it
    ],
)
def test_a_file_path_reads_as_a_prompt_would_say_it(path, name):
    assert name_from_path(path) == name


def test_a_dataset_without_names_is_named_by_its_file_paths(tmp_path):
    images, _ = toy_pairs(1)
    paths = [f"item/potion/{c}{i}.png" for i, c in enumerate(["red", "blue", "green"] * 3)]
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.eye(3, dtype=np.float32)[[0, 1, 2] * 3])
    meta = {"label_names": list(SHAPES), "paths": paths}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert load_dataset(str(tmp_path)).names[:3] == ["red potion", "blue potion", "green potion"]
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "paths": paths[:-1]}))
    assert load_dataset(str(tmp_path)).names is None  # not one path per sprite: no names


def test_a_name_too_long_for_a_prompt_is_left_out_of_training():
    images, names = toy_pairs(1)
    names[0] = " ".join(["red", "potion"] * 9)  # 18 words: over the 16 pieces a prompt may have
    with pytest.warns(UserWarning, match="1 names over 16 word pieces left out"):
        clip = train_clip(images, names, config=ClipConfig(vocab_size=60, width=32, layers=1,
                          heads=2, embed_dim=16, resolution=8), epochs=1)  # fmt: skip
    assert not clip.fits(names[0]) and clip.fits(names[1])


def test_paraphrases_and_halved_sprites():
    assert paraphrases("grey wolf") == ["grey wolf", "a grey wolf", "gray wolf"]
    assert paraphrases("apple") == ["apple", "an apple"]
    tiles = np.zeros((1, 4, 4, 3), np.uint8)
    tiles[0, :2, :2] = 200  # one block of four bright pixels, one block half bright
    tiles[0, 2:, 2:] = [[[100] * 3, [0] * 3], [[100] * 3, [0] * 3]]
    assert halve_sprites(tiles, 2)[0, :, :, 0].tolist() == [[200, 0], [0, 50]]
    with pytest.raises(ValueError, match="cannot be shrunk to 3x3"):
        halve_sprites(tiles, 3)


def test_spriteclip_learns_a_second_dataset_and_is_measured_on_both(tmp_path, capsys):
    """--extra-data: another dataset's sprites (twice the side, named by their paths) join
    training, shrunk to --data's side; --measure scores a trained SpriteCLIP on both held-out
    sets, with the share of names holding an unseen word."""
    images, names = toy_pairs(12)  # 20% held out: more than retrieval's 20 candidates
    small, big = tmp_path / "small", tmp_path / "big"
    save_toy_dataset(small, images, names)
    # The second set says its colours in other words: "crimson" is unseen by the first.
    paths = [f"item/{n.split()[1]}/{n.split()[0].replace('red', 'crimson')}.png" for n in names]
    save_toy_dataset(big, images.repeat(2, axis=1).repeat(2, axis=2), names, paths=paths)
    args = ["--data", str(small), "--epochs", "2", "--vocab", "60"]
    spriteclip_main([*args, "--out", str(tmp_path / "one")])
    spriteclip_main(
        [*args, "--out", str(tmp_path / "both"), "--extra-data", str(big), "--paraphrase"]
    )
    capsys.readouterr()
    unseen = {}
    for clip in ("one", "both"):
        spriteclip_main([*args, "--extra-data", str(big), "--measure", str(tmp_path / clip)])
        scores = json.loads(capsys.readouterr().out)
        assert set(scores) == {"held_out", "training", "held_out big"}
        unseen[clip] = scores["held_out big"]["unseen_names"]
    assert unseen["one"] > 0.2 and unseen["both"] == 0.0
    saved = json.loads((tmp_path / "both" / "config.json").read_text())["training"]
    assert saved["recipe"]["paraphrase"] and saved["extra_data"][0]["pairs"] > 0
    with pytest.raises(SystemExit):
        spriteclip_main([*args])  # neither --out nor --measure


def test_the_command_imports_diffusion_text_once():
    """``python -m diffusion.text`` runs the package's ``__main__``: were the command the
    module itself, runpy would run a second copy of it beside the one ``diffusion`` imports
    (and warn)."""
    run = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "diffusion.text", "--help"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: python -m diffusion.text")
