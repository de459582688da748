"""Per-token cross-attention: the U-Net attends to the prompt's token states beside its pooled
embedding. Tests give the cross-attention loud random weights (a trained one starts at zero) and
check that the token states, not just the pooled vector, reach every branch and change pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion import ContextUnet, Schedule, SpritePipeline, train
from diffusion.model import UnetConfig
from diffusion.text import ClipConfig, SpriteCLIP, train_tokenizer, words_of

LABELS = ["potion", "sword", "ring"]
NAMES = ["red potion", "blue potion", "golden sword", "rusty sword", "blue ring", "green ring"]
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
RUN = {"steps": 3, "seed": 5, "sampler": "ddim"}


def tiny_clip() -> SpriteCLIP:
    torch.manual_seed(0)
    config = ClipConfig(vocab_size=60, width=32, layers=1, heads=2, embed_dim=16, resolution=8)
    words = {w for name in NAMES for w in words_of(name)}
    return SpriteCLIP(config, train_tokenizer(NAMES * 3, config.vocab_size), words).eval()


def loud(model: ContextUnet) -> ContextUnet:
    """Every cross-attention weight random and large enough to change pixels."""
    for name, p in model.named_parameters():
        if ".cross." in name:
            torch.nn.init.normal_(p, std=0.5)
    return model


@pytest.fixture(scope="module")
def pipe() -> SpritePipeline:
    torch.manual_seed(0)
    model = ContextUnet(
        num_labels=3, resolution=8, channels=(8, 16), emb_dim=16, text_dim=16, cross_attention=(1,)
    )
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return SpritePipeline(
        loud(model), Schedule.linear(T=100), LABELS, device="cpu", text_encoder=tiny_clip()
    )


class Spy:
    """Records the text inputs of every network call, one row per branch."""

    def __init__(self, pipe: SpritePipeline) -> None:
        self.pipe, self.calls = pipe, []

    def __enter__(self) -> Spy:
        real = self.pipe.model.forward

        def spy(x, t, context, x0_prev=None, text=None, low=None, tokens=None, token_mask=None):
            self.calls.append({"context": context, "text": text, "tokens": tokens,
                               "mask": token_mask})  # fmt: skip
            return real(x, t, context, x0_prev, text, low, tokens, token_mask)

        self.pipe.model.forward = spy
        return self

    def __exit__(self, *exc: object) -> None:
        del self.pipe.model.forward


def words(pipe: SpritePipeline, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():  # as in sampling
        _, tokens, mask = pipe.text_encoder.encode_tokens([prompt])
    return tokens[0], mask[0]


def same_words(row_tokens, row_mask, expected) -> bool:
    tokens, mask = expected
    k = len(mask)
    return (
        torch.equal(row_tokens[:k], tokens)
        and torch.equal(row_mask[:k], mask)
        and not row_mask[k:].any()
    )


def test_config_checks_cross_attention_and_shipped_configs_load_unchanged():
    for fields, message in [
        ({"cross_attention": (1,)}, "needs a text model"),
        ({"text_dim": 16, "cross_attention": (3,)}, "cross_attention levels must be"),
        ({"text_dim": 16, "cross_attention": 1}, "cross_attention must be a list"),
    ]:
        with pytest.raises(ValueError, match=message):
            UnetConfig(channels=(8, 16), **fields)
    # the label model's config predates the field; the text model attends at 8x8 and 4x4
    for name, levels in (("sprites16", ()), ("sprites16-text", (1, 2))):
        folder = WEIGHTS / name
        if (folder / "config.json").exists():
            pipe = SpritePipeline.from_pretrained(folder, device="cpu")
            assert pipe.model.config.cross_attention == levels
            assert any(".cross." in k for k in pipe.model.state_dict()) == bool(levels)


def test_token_states_pool_to_the_text_embedding(pipe):
    clip = pipe.text_encoder
    pooled, tokens, mask = clip.encode_tokens(["red potion", "rusty golden sword"])
    assert torch.equal(pooled, clip.encode_text(["red potion", "rusty golden sword"]))
    assert mask[0].sum() < mask[1].sum() and not tokens[0][~mask[0]].any()
    mean = tokens.sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(mean, pooled, rtol=1e-5, atol=1e-6)


def test_the_network_reads_the_tokens_not_only_the_pooled_vector(pipe):
    model = pipe.model
    x, t, label = torch.randn(2, 3, 8, 8), torch.tensor([30.0, 30.0]), torch.eye(3)[[0, 0]]
    with torch.no_grad():
        pooled, tokens, mask = pipe.text_encoder.encode_tokens(["red potion", "blue ring"])
        same = pooled[[0, 0]]  # one pooled vector, two prompts' tokens
        out = model(x, t, label, text=same, tokens=tokens, token_mask=mask)
        assert not torch.allclose(out[0], out[1], atol=1e-4)
        # The mask is read: what stands in padding changes nothing, a masked word does.
        noisy = tokens.clone()
        noisy[~mask] = 7.0
        padded = model(x, t, label, text=same, tokens=noisy, token_mask=mask)
        torch.testing.assert_close(padded, out)
        fewer = mask.clone()
        fewer[1, 1] = False
        assert not torch.allclose(model(x, t, label, text=same, tokens=tokens, token_mask=fewer),
                                  out, atol=1e-4)  # fmt: skip
        # No tokens is "no prompt": only the null token, as a fully masked prompt.
        none = model(x, t, label, text=same)
        blank = model(x, t, label, text=same, tokens=tokens, token_mask=torch.zeros_like(mask))
        torch.testing.assert_close(none, blank)


def test_a_model_grown_with_cross_attention_starts_as_it_was(pipe, tmp_path):
    """--init from a text model without cross-attention: the output projections start at zero,
    so the grown network's outputs are exactly the old one's, tokens or not."""
    old = ContextUnet(num_labels=3, resolution=8, channels=(8, 16), emb_dim=16, text_dim=16)
    for p in old.parameters():
        torch.nn.init.normal_(p, std=0.05)
    SpritePipeline(
        old, Schedule.linear(T=100), LABELS, device="cpu", text_encoder=pipe.text_encoder
    ).save_pretrained(tmp_path / "text")
    grown = ContextUnet(UnetConfig(**{**old.config.to_dict(), "cross_attention": (0, 1)}))
    train.init_from(grown, tmp_path / "text")
    x, t, label = torch.randn(2, 3, 8, 8), torch.tensor([10.0, 60.0]), torch.eye(3)[[1, 2]]
    with torch.no_grad():
        pooled, tokens, mask = pipe.text_encoder.encode_tokens(["red potion", "blue ring"])
        before = old(x, t, label, text=pooled)
        assert torch.equal(grown(x, t, label, text=pooled, tokens=tokens, token_mask=mask), before)
        assert not torch.equal(loud(grown)(x, t, label, text=pooled, tokens=tokens,
                                           token_mask=mask), before)  # fmt: skip


def test_every_guidance_branch_gets_its_token_states(pipe):
    red, blue = words(pipe, "red potion"), words(pipe, "blue ring")
    with Spy(pipe) as spy:
        pipe.generate("potion", prompt="red potion", negative_prompt="blue ring",
                      guidance=2.0, guidance_text=3.0, **RUN)  # fmt: skip
    call = spy.calls[0]
    # Rows: (label, prompt), (label, negative), (no label, negative).
    assert len(call["context"]) == 3 and not call["context"][2].any()
    assert same_words(call["tokens"][0], call["mask"][0], red)
    assert all(same_words(call["tokens"][i], call["mask"][i], blue) for i in (1, 2))
    # Without a negative prompt the unconditional rows hold no word at all.
    with Spy(pipe) as spy:
        pipe.generate("potion", prompt="red potion", guidance=2.0, guidance_text=3.0, **RUN)
    assert same_words(spy.calls[0]["tokens"][0], spy.calls[0]["mask"][0], red)
    assert not spy.calls[0]["mask"][1:].any()
    # Text only (no label), and label only (guide="label": the prompt stays in both rows).
    with Spy(pipe) as spy:
        pipe.generate(None, prompt="red potion", guidance=3.0, **RUN)
    assert same_words(spy.calls[0]["tokens"][0], spy.calls[0]["mask"][0], red)
    assert not spy.calls[0]["mask"][1].any()
    with Spy(pipe) as spy:
        pipe.generate("potion", prompt="red potion", guide="label", guidance=3.0, **RUN)
    assert all(same_words(spy.calls[0]["tokens"][i], spy.calls[0]["mask"][i], red) for i in (0, 1))
    # A model without a prompt: no tokens, as with a model without cross-attention.
    with Spy(pipe) as spy:
        pipe.generate("potion", guidance=3.0, **RUN)
    assert spy.calls[0]["tokens"] is None


def test_edits_morphs_and_best_of_n_carry_the_tokens(pipe):
    red, blue = words(pipe, "red potion"), words(pipe, "blue ring")
    sprite = pipe.generate("ring", seed=1, steps=2)[0]
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    for edit in ({"image": sprite, "strength": 0.6}, {"image": sprite, "mask": mask}):
        with Spy(pipe) as spy:
            pipe.generate("potion", prompt="red potion", negative_prompt="blue ring",
                          guidance=2.0, **edit, **RUN)  # fmt: skip
        assert spy.calls and all(same_words(c["tokens"][0], c["mask"][0], red) for c in spy.calls)
        assert all(same_words(c["tokens"][1], c["mask"][1], blue) for c in spy.calls)
    with Spy(pipe) as spy:
        morph = {"prompt": "red potion", "negative_prompt": "blue ring", "guidance": 2.0}
        pipe.interpolate(("potion", 1), ("ring", 2), frames=3, steps=3, sampler="ddim", **morph)
    rows = spy.calls[0]  # 3 frames with the prompt, then 3 with the negative prompt
    assert all(same_words(rows["tokens"][i], rows["mask"][i], red) for i in range(3))
    assert all(same_words(rows["tokens"][i], rows["mask"][i], blue) for i in range(3, 6))
    with Spy(pipe) as spy:
        pipe.generate("potion", n=2, rerank=3, prompt="red potion", guidance=2.0, **RUN)
    assert len(spy.calls[0]["tokens"]) == 12  # 2 sprites x 3 candidates x 2 branches
    assert all(same_words(spy.calls[0]["tokens"][i], spy.calls[0]["mask"][i], red)
               for i in range(6))  # fmt: skip


def test_two_prompts_with_one_pooled_vector_draw_differently(pipe, monkeypatch):
    """The pipeline hands the network the tokens: same pooled embedding, other sprites."""
    clip = pipe.text_encoder
    real = clip.encode_tokens
    pooled_red = real(["red potion"])[0]

    def one_pooled_vector(texts):
        _, tokens, mask = real(texts)
        return pooled_red.expand(len(texts), -1), tokens, mask

    monkeypatch.setattr(clip, "encode_tokens", one_pooled_vector)
    for guided in ({"guidance": 1.0}, {"guidance": 3.0}, {"guidance": 2.0, "guidance_text": 3.0}):
        red = pipe.generate(None, prompt="red potion", **guided, **RUN)
        ring = pipe.generate(None, prompt="green ring", **guided, **RUN)
        assert not np.array_equal(red, ring), guided
    assert np.array_equal(red, pipe.generate(None, prompt="red potion", **guided, **RUN))


def test_training_drops_the_tokens_with_the_text_and_mirrors_them():
    from diffusion.train import _cond_dropout, drop_conditions, name_inputs

    n = 4000
    g = torch.Generator().manual_seed(0)
    tokens, mirrored = torch.ones(n, 3, 4), torch.full((n, 3, 4), 2.0)
    mask = torch.tensor([True, True, False]).expand(n, 3)
    context = torch.eye(3)[torch.randint(0, 3, (n,), generator=g)]
    dropped = drop_conditions(context, g, 0.5, 0.5, _cond_dropout("0.1,0.2,0.1"))
    flip = torch.rand(n, generator=g) < 0.5
    pooled = (torch.ones(n, 4), torch.full((n, 4), 2.0))
    tables = ((tokens, mask), (mirrored, mask))
    text = name_inputs(pooled, tables, torch.arange(n), flip, dropped)
    assert 0.27 < 1 - context.any(1).float().mean() < 0.33  # neither + text only
    kept = text["text"].any(1)
    assert 0.17 < 1 - kept.float().mean() < 0.23  # neither + label only
    assert torch.equal(text["token_mask"].any(1), kept) and not text["tokens"][~kept].any()
    # A flipped sprite's mirrored name: its tokens come from the same table as its pooled vector.
    assert torch.equal(text["tokens"][kept][:, 0, 0], text["text"][kept][:, 0])
    assert {1.0, 2.0} <= set(text["text"][kept][:, 0].tolist())


def test_cross_attention_trains_from_the_command_line(tmp_path):
    import json

    from tests.test_text import save_toy_dataset, toy_pairs

    folder = tmp_path / "data"
    save_toy_dataset(folder, *toy_pairs(2))
    tiny_clip().save_pretrained(tmp_path / "clip")
    common = ["--data", str(folder), "--channels", "8,16", "--batch-size", "6", "--lr", "1e-2",
              "--warmup-steps", "1", "--epochs", "1", "--sample-every", "99"]  # fmt: skip
    with pytest.raises(SystemExit, match="needs --text-encoder"):
        train.main([*common, "--out", str(tmp_path / "no"), "--cross-attention", "1"])
    out = tmp_path / "cross"
    train.main([*common, "--out", str(out), "--text-encoder", str(tmp_path / "clip"),
                "--cross-attention", "1"])  # fmt: skip
    trained = SpritePipeline.from_pretrained(out, device="cpu")
    assert trained.model.config.cross_attention == (1,)
    assert json.loads((out / "config.json").read_text())["model"]["cross_attention"] == [1]
    # The output projections left zero: the tokens reached the loss.
    assert any(p.abs().sum() > 0 for k, p in trained.model.named_parameters() if "cross.proj" in k)
    assert trained.generate("ring", prompt="green ring", steps=2, seed=0).shape == (1, 8, 8, 3)
