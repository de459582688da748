"""SpriteVAE: the autoencoder of a latent diffusion model (Rombach et al. 2022, "LDM").

The encoder squeezes a sprite (RGBA, 32x32) into a small latent (8x8 of a few channels), the
decoder turns a latent back into pixels, and a diffusion model trained on the latents never sees
a pixel: it denoises latents, and only the decoder paints. Like LDM's "KL-f4" autoencoders the
encoder gives a Gaussian per latent value (a mean and a log-variance) and training pulls it
towards N(0, I) with a small KL term, which keeps the latent space smooth enough to diffuse in;
``scale`` then brings the latents to about unit variance, as the diffusion model's noise assumes.
LDM adds a perceptual and an adversarial loss for photographs; pixel art is judged pixel by
pixel, so this one learns with an L1 reconstruction loss alone.

Train one: ``python -m diffusion.autoencoder --data ../shared/data/dcss32 --out runs/vae``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn

from . import render
from .data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, DataError, load_dataset
from .ema import update_ema
from .files import atomic_write, read_config, write_config
from .model import check_whole, config_from_dict

FORMAT = "sprite-vae/1"
# What a config may ask for, checked before anything is allocated (see model.BOUNDS).
VAE_BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (3, 4),
    "resolution": (8, 256),
    "channels": (8, 512),
    "levels": (2, 4),
    "latent_channels": (1, 16),
    "groups": (1, 64),
}


@dataclass
class VAEConfig:
    """Everything needed to rebuild a SpriteVAE; its folder's config.json "model"."""

    in_channels: int = 4  # the sprite's: RGB, or RGBA
    resolution: int = 32
    # Channels per level; each level after the first halves the side, so three levels map
    # 32x32 to an 8x8 latent.
    channels: tuple[int, ...] = (32, 64, 128)
    latent_channels: int = 8
    groups: int = 8
    # Multiplies the encoder's mean (and divides before decoding) so that the latents of the
    # training sprites have unit standard deviation: LDM's "scale_factor", measured after
    # training (see :func:`measure_scale`).
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("in_channels", "resolution", "latent_channels", "groups"):
            check_whole(name, getattr(self, name), *VAE_BOUNDS[name])
        if not isinstance(self.channels, (list, tuple)):
            raise ValueError(f"channels must be a list of whole numbers, got {self.channels!r}")
        check_whole("the number of levels (channels)", len(self.channels), *VAE_BOUNDS["levels"])
        self.channels = tuple(
            check_whole("channels", c, *VAE_BOUNDS["channels"]) for c in self.channels
        )
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"every channel count must be divisible by groups={self.groups}")
        if self.resolution % self.factor:
            raise ValueError(f"resolution {self.resolution} must be divisible by {self.factor}")
        if isinstance(self.scale, bool) or not (
            isinstance(self.scale, (int, float)) and 0 < self.scale < 1e4
        ):
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")

    @property
    def factor(self) -> int:
        """How many pixels one latent value stands for along each side."""
        return 2 ** (len(self.channels) - 1)

    @property
    def latent_resolution(self) -> int:
        return self.resolution // self.factor

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, fields: Any) -> VAEConfig:
        return config_from_dict(cls, fields, "autoencoder")


class _Block(nn.Module):
    """A residual block of two 3x3 convolutions with GroupNorm (no time embedding here)."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, cin),
            nn.SiLU(),
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(groups, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class SpriteVAE(nn.Module):
    """``encode(x) -> (mean, logvar)`` of the latent, ``decode(z) -> x``; x in [-1, 1] as the
    diffusion models see sprites (``render.model_pixels``), z already multiplied by ``scale``."""

    def __init__(self, config: VAEConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = c = config or VAEConfig(**kwargs)
        # The saved folder's "training" and "reconstruction" sections, for model cards.
        self.history: dict[str, Any] = {}
        ch, g = c.channels, c.groups
        down: list[nn.Module] = [nn.Conv2d(c.in_channels, ch[0], 3, padding=1)]
        for level, cout in enumerate(ch):
            down.append(_Block(ch[max(level - 1, 0)], cout, g))
            if level < len(ch) - 1:
                down.append(nn.Conv2d(cout, cout, 3, stride=2, padding=1))
        down += [_Block(ch[-1], ch[-1], g), nn.GroupNorm(g, ch[-1]), nn.SiLU()]
        down.append(nn.Conv2d(ch[-1], 2 * c.latent_channels, 3, padding=1))
        self.encoder = nn.Sequential(*down)
        up: list[nn.Module] = [nn.Conv2d(c.latent_channels, ch[-1], 3, padding=1)]
        up.append(_Block(ch[-1], ch[-1], g))
        for level in reversed(range(len(ch))):
            up.append(_Block(ch[min(level + 1, len(ch) - 1)], ch[level], g))
            if level > 0:
                up += [nn.Upsample(scale_factor=2, mode="nearest")]
                up.append(nn.Conv2d(ch[level], ch[level], 3, padding=1))
        up += [nn.GroupNorm(g, ch[0]), nn.SiLU(), nn.Conv2d(ch[0], c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The latent's mean and log-variance, both (n, latent_channels, h, w), scaled."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        return mean * self.config.scale, logvar + 2 * math.log(self.config.scale)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z / self.config.scale)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reconstruction through a sampled latent, and the KL divergence from N(0, I) per
        sprite (in the unscaled space the prior is defined in)."""
        mean, logvar = self.encode(x)
        noise = torch.randn(mean.shape, generator=generator).to(mean)
        z = mean + (0.5 * logvar).exp() * noise
        m, lv = mean / self.config.scale, logvar - 2 * math.log(self.config.scale)
        kl = 0.5 * (m.square() + lv.exp() - 1 - lv).flatten(1).sum(1)
        return self.decode(z), kl

    # -- files ----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> SpriteVAE:
        """Load a folder written by :meth:`save_pretrained`; ValueError names what is wrong."""
        folder = Path(folder)
        config_path, weights = folder / "config.json", folder / "model.safetensors"
        for path in (config_path, weights):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{folder} is not an autoencoder folder: {path.name} is missing"
                )
        config = read_config(config_path)
        if config.get("format") != FORMAT:
            raise ValueError(f"{config_path}: not a {FORMAT} config ({config.get('format')=})")
        try:
            vae = cls(VAEConfig.from_dict(config.get("model")))
        except ValueError as err:
            raise ValueError(f"{config_path}: {err}") from None
        try:
            safetensors.torch.load_model(vae, weights, device="cpu")
        except (RuntimeError, safetensors.SafetensorError) as err:
            raise ValueError(f"{weights}: not the network config.json describes ({err})") from None
        if not all(bool(torch.isfinite(p).all()) for p in vae.state_dict().values()):
            raise ValueError(f"{weights}: holds NaN or infinite values; the weights are broken")
        vae.history = {k: config[k] for k in ("training", "reconstruction") if k in config}
        return vae.eval()

    def save_pretrained(self, folder: str | os.PathLike, extra: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"format": FORMAT, "model": self.config.to_dict(), **self.history, **(extra or {})}
        write_config(folder / "config.json", config)
        atomic_write(folder / "model.safetensors", lambda p: safetensors.torch.save_model(self, p))


@torch.no_grad()
def measure_scale(vae: SpriteVAE, x: Tensor) -> float:
    """1 / the standard deviation of the unscaled latent means of sprites ``x``."""
    mean, _ = vae.encode(x)
    return float(vae.config.scale / mean.std())


@torch.no_grad()
def reconstruct(vae: SpriteVAE, x: Tensor, batch: int = 256) -> Tensor:
    """Sprites through the encoder's mean and the decoder, in [-1, 1]."""
    return torch.cat([vae.decode(vae.encode(part)[0]) for part in x.split(batch)]).clamp(-1, 1)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 arrays."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def reconstruction_figures(
    vae: SpriteVAE, rgba: np.ndarray, palette: np.ndarray | None = None
) -> dict[str, float]:
    """How well ``vae`` reconstructs uint8 RGBA sprites: PSNR (dB, RGBA with hard alpha), the
    share of pixels that come back exactly, and with ``palette`` (the training colours) the
    same share after the palette stage snaps the reconstruction to it."""
    real = render.harden_alpha(rgba)
    x = render.to_tensor(render.model_pixels(real, vae.config.in_channels))
    recon = render.model_output(render.to_uint8(reconstruct(vae, x)))
    figures = {"psnr_held_out": psnr(recon, real), "exact_held_out": _exact(recon, real)}
    if palette is not None:
        snapped = render.apply_palette(recon, "data", palette)
        figures["exact_after_palette"] = _exact(snapped, real)
    return figures


def _exact(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).all(-1).mean())


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m diffusion.autoencoder", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", required=True, help="a course-format folder with rgba.npy")
    p.add_argument("--out", required=True, type=Path, help="the autoencoder folder to write")
    p.add_argument("--channels", default="32,64,128", help="channels per level")
    p.add_argument("--latent-channels", type=int, default=8)
    p.add_argument("--kl", type=float, default=1e-4, help="weight of the KL term per latent value")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training")
    p.add_argument("--init", type=Path, help="continue from this autoencoder folder")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Train a SpriteVAE on the training split (the evaluator's held-out sprites stay unseen)
    and write it, with its measured scale and reconstruction figures, to ``--out``."""
    args = _parse_args(argv)
    try:
        data = load_dataset(args.data)
        train, held = data.split(EVAL_HOLDOUT, EVAL_SPLIT_SEED)
    except DataError as err:
        sys.exit(f"--data: {err}")
    if data.alpha is None:
        sys.exit(f"--data: {args.data} has no alpha (rgba.npy beside images.npy)")
    torch.manual_seed(args.seed)
    pixels = render.to_tensor(np.concatenate([train.images, train.alpha[..., None]], -1))
    pixels = torch.cat([pixels, pixels.flip(3)])  # mirrored sprites are sprites too
    held_rgba = np.concatenate([held.images, held.alpha[..., None]], -1)
    if args.init:
        vae = SpriteVAE.from_pretrained(args.init).train()
        vae.config.scale = 1.0
    else:
        channels = tuple(int(c) for c in args.channels.split(","))
        vae = SpriteVAE(
            VAEConfig(
                in_channels=4,
                resolution=data.resolution,
                channels=channels,
                latent_channels=args.latent_channels,
            )
        )
    ema = copy.deepcopy(vae).requires_grad_(False)
    vae.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(pixels) / args.batch_size)
    total, step, elapsed = steps_per_epoch * args.epochs, 0, 0.0
    print(f"{len(train)} sprites, {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M parameters")
    for epoch in range(1, args.epochs + 1):
        t0, losses = time.time(), []
        for idx in torch.randperm(len(pixels), generator=generator).split(args.batch_size):
            lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = lr
            x = pixels[idx].contiguous(memory_format=torch.channels_last)
            # bf16 autocast: about twice as fast on a CPU with bf16 units, as in diffusion.train.
            with torch.autocast("cpu", torch.bfloat16):
                recon, kl = vae(x, generator)
            recon, kl = recon.float(), kl.float()
            loss = (recon - x).abs().mean() + args.kl * kl.mean() / vae.config.latent_channels / (
                vae.config.latent_resolution**2
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            update_ema(ema, vae, step, 0.999)
            step += 1
            losses.append(loss.item())
        elapsed += time.time() - t0
        print(
            f"epoch {epoch} step {step} loss {np.mean(losses):.4f} {elapsed / 60:.1f} min",
            flush=True,
        )
        if args.max_minutes is not None and elapsed > 60 * args.max_minutes:
            break
    ema.config.scale = measure_scale(ema, pixels)
    palette = render.data_palette(train.images[train.alpha > 127])
    figures = reconstruction_figures(ema, held_rgba, palette)
    ema.save_pretrained(
        args.out,
        {
            "training": {
                "data": str(args.data),
                "steps": step,
                "minutes": round(elapsed / 60, 1),
                "recipe": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            },
            "reconstruction": figures,
        },
    )
    print(f"wrote {args.out}: scale {ema.config.scale:.3f}, {figures}")


if __name__ == "__main__":
    main()
