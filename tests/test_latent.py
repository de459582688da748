"""Latent diffusion and 2x upscaling: the autoencoder, a latent model and an upscaler, trained
end to end on a tiny RGBA set, and what the pipeline does with them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import SpritePipeline, autoencoder, render, train
from diffusion import __main__ as cli
from diffusion.autoencoder import SpriteVAE, VAEConfig, measure_scale, psnr, reconstruct


def rgba_data(root, side: int = 8):
    """48 sprites of three labels: a coloured square on a transparent ground, RGB on white."""
    rng = np.random.default_rng(0)
    n, k = 48, 3
    labels = np.arange(n) % k
    colours = np.array([[200, 40, 40], [40, 160, 60], [50, 60, 210]])
    rgba = np.zeros((n, side, side, 4), np.uint8)
    for i, label in enumerate(labels):
        a, b = rng.integers(0, side // 2, 2)
        rgba[i, a : a + side // 2, b : b + side // 2] = [*colours[label], 255]
    images = render.composite(rgba)
    folder = root / "data"
    folder.mkdir()
    np.save(folder / "images.npy", images)
    np.save(folder / "rgba.npy", rgba)
    np.save(folder / "labels.npy", np.eye(k, dtype=np.float32)[labels])
    (folder / "meta.json").write_text(json.dumps({"label_names": ["red", "green", "blue"]}))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny autoencoder (8x8 RGBA -> 4x4x4), a latent model on it and an upscaler."""
    root = tmp_path_factory.mktemp("latent")
    data = rgba_data(root)
    vae = root / "vae"
    autoencoder.main(
        ["--data", str(data), "--out", str(vae), "--channels", "8,16", "--latent-channels", "4",
         "--epochs", "40", "--batch-size", "16", "--lr", "3e-3"]
    )  # fmt: skip
    common = ["--data", str(data), "--channels", "8,16", "--batch-size", "16", "--alpha",
              "--warmup-steps", "2", "--epochs", "2"]  # fmt: skip
    train.main([*common, "--out", str(root / "latent"), "--autoencoder", str(vae)])
    train.main([*common, "--out", str(root / "up"), "--upscale", "--p-uncond", "1"])
    return root, data


def test_autoencoder_config_is_checked():
    with pytest.raises(ValueError, match="unknown fields"):
        VAEConfig.from_dict({"latent": 4})
    with pytest.raises(ValueError, match="latent_channels must be a whole number from 1 to 16"):
        VAEConfig(latent_channels=64)
    with pytest.raises(ValueError, match="divisible by groups"):
        VAEConfig(channels=(12, 16))
    assert VAEConfig(resolution=32, channels=(8, 16, 32)).latent_resolution == 8


def test_autoencoder_learns_to_reconstruct(trained):
    root, data = trained
    vae = SpriteVAE.from_pretrained(root / "vae")
    rgba = np.load(data / "rgba.npy")
    x = render.to_tensor(render.model_pixels(rgba, 4))
    with torch.no_grad():
        latent = vae.encode(x)[0]
    assert latent.shape == (48, 4, 4, 4)
    # The scale brings the training latents to unit spread, as the diffusion noise assumes.
    assert latent.std().item() == pytest.approx(1.0, abs=0.15)
    assert measure_scale(vae, x) == pytest.approx(vae.config.scale, rel=0.15)
    recon = render.model_output(render.to_uint8(reconstruct(vae, x)))
    blank = np.zeros_like(rgba)
    # Far closer to the sprites than an empty picture is: it learned the squares.
    assert psnr(recon, render.harden_alpha(rgba)) > psnr(blank, render.harden_alpha(rgba)) + 6
    saved = json.loads((root / "vae" / "config.json").read_text())
    assert saved["reconstruction"]["psnr_held_out"] > 10
    assert saved["training"]["steps"] > 0


def test_psnr_of_known_error():
    a = np.zeros((4, 4), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 255) == pytest.approx(0.0)
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255), abs=1e-6)


def test_latent_model_samples_in_latent_space_and_decodes(trained):
    root, _ = trained
    pipe = SpritePipeline.from_pretrained(root / "latent")
    assert pipe.latent and pipe.rgba and pipe.resolution == 8 and pipe.state_shape == (4, 4, 4)
    frames = list(pipe.stream("red", n=2, sampler="ddim", steps=4, seed=3))
    last = frames[-1]
    assert last.x.shape == (2, 8, 8, 4) and last.latent.shape == (2, 4, 4, 4)
    assert set(np.unique(last.x[..., 3])) <= {0, 255}
    # What the frame shows is the decoder's picture of its latent.
    latent = torch.from_numpy(last.latent).permute(0, 3, 1, 2)
    assert np.array_equal(last.x, pipe._pixels(latent))
    # The first latent is the start noise, about N(0, 1); the last is the clean latent.
    assert frames[0].latent.std() > 0.5
    again = pipe.generate("red", n=2, sampler="ddim", steps=4, seed=3)
    assert np.array_equal(again, last.x)


def test_latent_model_folder_round_trips(trained, tmp_path):
    root, _ = trained
    pipe = SpritePipeline.from_pretrained(root / "latent")
    pipe.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / "autoencoder" / "model.safetensors").is_file()
    again = SpritePipeline.from_pretrained(tmp_path / "copy")
    a = pipe.generate("blue", sampler="ddim", steps=3, seed=1)
    assert np.array_equal(a, again.generate("blue", sampler="ddim", steps=3, seed=1))
    card = json.loads((root / "latent" / "config.json").read_text())
    assert card["training"]["autoencoder"]["training"]["steps"] > 0


def test_latent_model_without_its_autoencoder_is_refused(trained, tmp_path):
    root, _ = trained
    shutil.copytree(root / "latent", tmp_path / "bare")
    shutil.rmtree(tmp_path / "bare" / "autoencoder")
    with pytest.raises(ValueError, match="a latent model, but its autoencoder/ folder is missing"):
        SpritePipeline.from_pretrained(tmp_path / "bare")
    pipe = SpritePipeline.from_pretrained(root / "latent")
    with pytest.raises(ValueError, match=r"or 4 \(RGBA\), got 6: a network of other channels"):
        SpritePipeline(
            type(pipe.model)(pipe.model.config.__class__(num_labels=3, in_channels=6)),
            pipe.schedule,
            pipe.labels,
        )


def test_latent_edits_keep_the_known_pixels(trained):
    root, data = trained
    pipe = SpritePipeline.from_pretrained(root / "latent")
    sprite = render.harden_alpha(np.load(data / "rgba.npy")[0])
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True
    out = pipe.generate("red", image=sprite, mask=mask, sampler="ddim", steps=4, seed=0)[0]
    assert np.array_equal(out[:, :4], sprite[:, :4])
    edited = pipe.generate("red", image=sprite, strength=0.5, sampler="ddim", steps=4, seed=0)
    assert edited.shape == (1, 8, 8, 4)
    with pytest.raises(ValueError, match="a latent model's decoder does not wrap"):
        pipe.generate("red", tileable=True)
    morph = pipe.interpolate(("red", 0), ("blue", 1), frames=3, sampler="ddim", steps=3)
    assert morph.shape == (3, 8, 8, 4)
    assert np.array_equal(morph[0], pipe.generate("red", sampler="ddim", steps=3, seed=0)[0])


def test_reduce_half_averages_or_picks_a_pixel():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1) / 16
    low = train.reduce_half(x, torch.Generator().manual_seed(0))
    averaged = torch.nn.functional.avg_pool2d(x[:1], 2)[0]
    picked = [x[0, :, dy::2, dx::2] for dy in (0, 1) for dx in (0, 1)]
    kinds = {
        "average" if torch.equal(row, averaged) else "pick"
        for row in low
        if torch.equal(row, averaged) or any(torch.equal(row, p) for p in picked)
    }
    assert low.shape == (64, 1, 2, 2) and kinds == {"average", "pick"}
    alpha = torch.tensor([[1.0, -1.0], [-1.0, -1.0]]).repeat(2, 2)[None, None]
    rgba = torch.cat([torch.zeros(1, 3, 4, 4), alpha], 1).repeat(32, 1, 1, 1)
    assert set(train.reduce_half(rgba, torch.Generator())[:, 3].unique().tolist()) <= {-1.0, 1.0}


def test_upscaler_enlarges_a_sprite(trained):
    root, data = trained
    pipe = SpritePipeline.from_pretrained(root / "up")
    assert pipe.low_res == 4 and pipe.resolution == 8
    small = render.harden_alpha(np.load(data / "rgba.npy")[:3, ::2, ::2])
    big = pipe.upscale(small, sampler="ddim", steps=3, seed=0)
    assert big.shape == (3, 8, 8, 4)
    assert np.array_equal(big, pipe.upscale(small, sampler="ddim", steps=3, seed=0))
    one = pipe.upscale(render.composite(small[0]), sampler="ddim", steps=3, seed=0)
    assert one.shape == (1, 8, 8, 4)
    with pytest.raises(ValueError, match="upscaler: give it the sprite to enlarge"):
        pipe.generate()
    with pytest.raises(ValueError, match=r"low_res must be uint8 \(4, 4, 3 or 4\)"):
        pipe.upscale(np.zeros((8, 8, 4), np.uint8))
    label_model = SpritePipeline.from_pretrained(root / "latent")
    with pytest.raises(ValueError, match="low_res= is for an upscaler"):
        label_model.upscale(small)


def test_latent_training_refuses_a_mismatched_autoencoder(trained, tmp_path):
    root, data = trained
    base = ["--data", str(data), "--out", str(tmp_path / "r"), "--channels", "8,16"]
    with pytest.raises(SystemExit, match="add --alpha"):
        train.main([*base, "--autoencoder", str(root / "vae")])
    with pytest.raises(SystemExit, match="takes no --autoencoder"):
        train.main([*base, "--alpha", "--upscale", "--autoencoder", str(root / "vae")])
    with pytest.raises(SystemExit, match=r"--autoencoder: .*not an autoencoder folder"):
        train.main([*base, "--alpha", "--autoencoder", str(tmp_path)])


def test_upscale_command_writes_an_rgba_png(trained, tmp_path, capsys):
    root, data = trained
    small = render.harden_alpha(np.load(data / "rgba.npy")[0, ::2, ::2])
    Image.fromarray(small).save(tmp_path / "in.png")
    Image.fromarray(render.composite(small)).save(tmp_path / "rgb.png")
    for name in ("in", "rgb"):
        cli.main(["upscale", str(tmp_path / f"{name}.png"), "--out",
                  str(tmp_path / f"{name}2x.png"), "--model", str(root / "up"), "--steps", "3",
                  "--gif", str(tmp_path / "up.gif")])  # fmt: skip
        with Image.open(tmp_path / f"{name}2x.png") as out:
            assert out.mode == "RGBA" and out.size == (8, 8)
    # An RGB sprite on white is read as the same sprite with a transparent ground.
    with Image.open(tmp_path / "in2x.png") as a, Image.open(tmp_path / "rgb2x.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    (tmp_path / "bad.png").write_text("not a picture")
    with pytest.raises(SystemExit) as stop:
        cli.main(["upscale", str(tmp_path / "bad.png"), "--out", str(tmp_path / "x.png"),
                  "--model", str(root / "up")])  # fmt: skip
    assert stop.value.code == 2 and "not an image Pillow can read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["upscale", str(tmp_path / "in.png"), "--out", str(tmp_path / "x.png"),
                  "--model", str(root / "latent")])  # fmt: skip
    assert "is not an upscaler" in capsys.readouterr().err


def test_cards_say_what_the_models_are(trained):
    root, _ = trained
    latent = (root / "latent" / "README.md").read_text()
    assert "latent diffusion model" in latent and "4x4 latents of 4 channels" in latent
    assert "draws 8x8 transparent (RGBA" in latent and "uint8 (n, 8, 8, 4)" in latent
    up = (root / "up" / "README.md").read_text()
    assert "2x upscaler (SR3" in up and "conditioned on a 4x4 one" in up
    assert "pipe.upscale(small, seed=0)" in up


def test_a_sprite_model_starts_an_upscaler_that_ignores_the_small_sprite(tmp_path):
    from diffusion import ContextUnet, Schedule, UnetConfig

    torch.manual_seed(0)
    fields = dict(num_labels=3, resolution=8, in_channels=4, channels=(8, 16), emb_dim=16)
    source = ContextUnet(**fields)
    for p in source.parameters():  # zero-initialised layers made non-trivial
        p.data.normal_(0, 0.1)
    SpritePipeline(source, Schedule.linear(T=50), ["a", "b", "c"]).save_pretrained(tmp_path / "m")
    upscaler = ContextUnet(UnetConfig(**fields, low_res=4))
    train.init_from(upscaler, tmp_path / "m")
    x, t, c = torch.randn(2, 4, 8, 8), torch.tensor([5.0, 40.0]), torch.zeros(2, 3)
    with torch.no_grad():
        expected = source(x, t, c)
        for low in (torch.zeros(2, 4, 4, 4), torch.randn(2, 4, 4, 4)):
            assert torch.allclose(upscaler(x, t, c, low=low), expected, atol=1e-6)
    other = ContextUnet(UnetConfig(**fields, low_res=2))
    SpritePipeline(upscaler, Schedule.linear(T=50), ["a", "b", "c"]).save_pretrained(tmp_path / "u")
    with pytest.raises(SystemExit, match="--init"):
        train.init_from(other, tmp_path / "u")


def test_the_evaluator_measures_a_latent_model_and_refuses_an_upscaler(trained, tmp_path, capsys):
    from diffusion.evaluate.report import main as evaluate

    root, data = trained
    out = tmp_path / "eval.json"
    evaluate([str(root / "latent"), "--data", str(data), "--n", "4", "--seed", "0", "--sampler",
              "ddim", "--steps", "3", "--cache", str(tmp_path), "--json", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["frechet_distance"]["generated"] > 0 and "alpha" in report
    with pytest.raises(SystemExit):
        evaluate([str(root / "up"), "--data", str(data), "--cache", str(tmp_path)])
    assert "is an upscaler: measure it with benchmarks.upscale" in capsys.readouterr().err
