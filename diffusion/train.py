"""Train a ContextUnet on labelled sprites: ``python -m diffusion.train --data DIR --out RUN``.

On several processes (GPUs, or machines): ``torchrun --nproc_per_node=N -m diffusion.train ...``
trains with DistributedDataParallel (nccl on GPUs, gloo on CPUs). Every process draws the same
global batch and trains on its own share of it, so N processes with ``--batch-size B`` follow the
same path as one process with the same B; only the first process writes files.

The recipe, each part a flag: AdamW with warm-up then cosine decay, an EMA of the weights (what
ships), context dropout so one network learns conditional and unconditional noise (for
classifier-free guidance), horizontal flips and the data's second animation frames as
augmentation, class-balanced sampling, and on a GPU bf16 autocast and torch.compile.

The run folder is always a loadable model (config.json, model.safetensors, README.md), plus
``checkpoint.pt`` for ``--resume``, ``loss.csv`` and ``samples/``. Checkpoints are written
atomically after the first epoch and then once ``--checkpoint-every`` seconds have passed (a
minute: on a GPU an epoch of sprites is a dozen batches, and writing the optimiser's state after
each could cost as much as those batches), so a killed run resumed with ``--resume`` loses at
most that much and continues exactly (weights, optimiser, EMA, step and random state).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import objectives, render
from .autoencoder import SpriteVAE
from .card import data_credit, write_model_card
from .data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, DataError, SpriteDataset, load_dataset
from .device import default_device, describe
from .ema import update_ema
from .files import atomic_write
from .hub import push_to_hub
from .model import ContextUnet, UnetConfig
from .options import FALLBACK
from .pipeline import SpritePipeline
from .schedules import SCHEDULES, make_schedule
from .text import SpriteCLIP, mirror_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m diffusion.train", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--data", required=True, help="course-format folder, PNG folders or hf://datasets/.."
    )
    p.add_argument("--out", required=True, type=Path, help="run folder (becomes a model folder)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after the epoch that passes this much training time (a lent GPU's budget), "
        "with the learning rate's cosine annealed by then; the run folder is exported as always "
        "and --resume continues it",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="write checkpoint.pt after the first epoch that ends this long after the last one, "
        "and after the last epoch (0: after every epoch); a killed run loses no more",
    )
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a share of --lr")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--p-uncond", type=float, default=0.1, help="context dropout probability")
    p.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="dropout in every residual block (0.1 is DDPM's on CIFAR-10): against learning a "
        "small dataset by heart",
    )
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flips")
    p.add_argument("--p-alt-frame", type=float, default=0.5, help="use the 2nd animation frame")
    p.add_argument(
        "--balance",
        type=float,
        default=0.5,
        help="class sampling weight ~ count^-balance per sprite: 0 natural, 1 fully balanced",
    )
    p.add_argument(
        "--split",
        choices=["all", "train"],
        default="all",
        help="'train' holds out the evaluator's split (diffusion.evaluate) for honest measurement",
    )
    p.add_argument(
        "--alpha",
        action="store_true",
        help="model transparency: RGBA sprites (the data's rgba.npy), alpha as a 4th channel",
    )
    p.add_argument("--channels", default="64,128,128", help="channels per U-Net level")
    p.add_argument("--blocks", type=int, default=1, help="residual blocks per level")
    p.add_argument(
        "--attention",
        default="",
        help="U-Net levels with self-attention, e.g. '1,2' (8x8 and 4x4 at 16px); '' for none",
    )
    p.add_argument(
        "--cross-attention",
        default="",
        help="with --text-encoder: U-Net levels whose blocks also attend to the name's token "
        "states, e.g. '1,2'; '' for the pooled embedding alone",
    )
    p.add_argument(
        "--prediction",
        choices=objectives.PREDICTIONS,
        default="eps",
        help="network target: eps, v, or edm (Karras et al. 2022's preconditioning)",
    )
    p.add_argument(
        "--noise-levels",
        choices=objectives.NOISE_LEVELS,
        default="uniform",
        help="noise levels trained on: uniform in t, or lognormal in sigma (Karras et al. 2022)",
    )
    p.add_argument(
        "--min-snr",
        type=float,
        default=None,
        metavar="GAMMA",
        help="Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); off by default",
    )
    p.add_argument(
        "--self-cond",
        type=float,
        default=0.0,
        metavar="P",
        help="self-conditioning on the previous x0 estimate, used in training with probability P "
        "(Chen et al. 2023 use 0.5); 0 = off",
    )
    p.add_argument(
        "--text-encoder",
        type=Path,
        metavar="CLIP",
        help="a SpriteCLIP folder (python -m diffusion.text): condition on each sprite's name too",
    )
    p.add_argument(
        "--p-uncond-text",
        type=float,
        default=0.1,
        help="text dropout probability, drawn apart from the label's (--p-uncond)",
    )
    p.add_argument(
        "--cond-dropout",
        type=_cond_dropout,
        default=None,
        metavar="NEITHER,TEXT_ONLY,LABEL_ONLY",
        help="with --text-encoder: shares of examples that keep neither condition, only the text, "
        "only the label (e.g. 0.1,0.2,0.1; the rest keep both), drawn jointly so that each branch "
        "guidance uses is trained; replaces --p-uncond and --p-uncond-text",
    )
    p.add_argument(
        "--autoencoder",
        type=Path,
        metavar="VAE",
        help="a SpriteVAE folder (python -m diffusion.autoencoder): train a latent model, which "
        "denoises the autoencoder's latents instead of pixels (needs --alpha)",
    )
    p.add_argument(
        "--upscale",
        action="store_true",
        help="train a 2x upscaler (SR3): the network also sees each sprite reduced to half its "
        "side and enlarged again, and learns to draw the full-size sprite",
    )
    p.add_argument(
        "--init",
        type=Path,
        metavar="MODEL",
        help="start from this model folder's weights (same network; a text part starts at zero, "
        "an alpha channel added to an RGB model too, and so does self-attention at more levels)",
    )
    p.add_argument("--schedule", default="linear", choices=SCHEDULES)
    p.add_argument("--T", type=int, default=500, help="diffusion steps of the schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-every", type=int, default=25, help="epochs between sample sheets")
    p.add_argument("--guidance", type=float, default=2.0, help="default guidance of the model")
    p.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        default="auto",
        help="bf16 autocast: auto is on for a GPU only; 'on' also pays on CPUs with AVX512-BF16",
    )
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the finished model to this repo")
    return p.parse_args(argv)


def sampling_weights(labels: np.ndarray, balance: float) -> torch.Tensor:
    """Per-sprite draw weights: each class's total share ~ count^(1 - balance)."""
    counts = np.bincount(labels)
    return torch.as_tensor(counts[labels] ** -float(balance), dtype=torch.float64)


def lr_at(step: int, total: int, args: argparse.Namespace, elapsed: float = 0.0) -> float:
    """Warm-up, then a cosine from --lr down to --min-lr-ratio of it over the run's steps, or
    over its --max-minutes where those run out first: a budgeted run ends annealed whatever the
    device's speed (``elapsed``: seconds trained when the epoch began)."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, total - args.warmup_steps)
    if args.max_minutes:
        progress = max(progress, elapsed / (60 * args.max_minutes))
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine)


class Trainer:
    """The training state (model, EMA, optimiser, data, random generator) and what acts on it."""

    def __init__(self, args: argparse.Namespace, data: SpriteDataset) -> None:
        self.args, self.data = args, data
        self.rank, self.world = start_distributed()
        self.device = default_device()
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        cuda = self.device.type == "cuda"
        self.amp = args.amp == "on" or (args.amp == "auto" and cuda)
        torch.manual_seed(args.seed)
        channels = tuple(int(c) for c in args.channels.split(","))
        self.schedule = make_schedule(args.schedule, args.T)
        self.vae = SpriteVAE.from_pretrained(args.autoencoder) if args.autoencoder else None
        side, depth = data.resolution, 4 if args.alpha else 3
        if self.vae is not None:
            side, depth = self.vae.config.latent_resolution, self.vae.config.latent_channels
        config = UnetConfig(
            num_labels=data.num_labels,
            resolution=side,
            in_channels=depth,
            low_res=data.resolution // 2 if args.upscale else 0,
            channels=channels,
            blocks_per_level=args.blocks,
            T=args.T,
            prediction=args.prediction,
            attention=tuple(int(level) for level in args.attention.split(",") if level.strip()),
            self_condition=args.self_cond > 0,
            dropout=args.dropout,
        )
        self.clip, self.text, self.tokens = None, None, None
        if args.text_encoder:
            self.clip = SpriteCLIP.from_pretrained(args.text_encoder)
            cross = tuple(int(v) for v in args.cross_attention.split(",") if v.strip())
            config = dataclasses.replace(
                config, text_dim=self.clip.config.embed_dim, cross_attention=cross
            )
            self.text = text_table(self.clip, data)
            self.tokens = token_table(self.clip, data) if cross else None
        self.model = ContextUnet(config)
        # Steps and minutes of the runs this one continues, so the card can give the totals.
        self.prior: dict = {"steps": 0, "minutes": 0.0}
        if args.init:
            self.prior = init_from(self.model, args.init)
        self.model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        # channels_last makes oneDNN's CPU convolutions about 20% faster at these sizes (DDP's
        # gradient buckets want the default layout).
        cpu_alone = self.device.type == "cpu" and self.world == 1
        self.memory_format = torch.channels_last if cpu_alone else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay
        )
        use_compile = args.compile == "on" or (args.compile == "auto" and cuda)
        net = self.model
        if self.world > 1:  # averages the gradients of all processes after every backward
            net = DistributedDataParallel(self.model, device_ids=[self.device] if cuda else None)
        self.forward = torch.compile(net) if use_compile else net
        self.generator = torch.Generator().manual_seed(args.seed)
        self.step, self.epoch, self.elapsed = 0, 0, 0.0
        self.steps_per_epoch = math.ceil(len(data) / args.batch_size)
        self.total_steps = self.steps_per_epoch * args.epochs
        self.weights = sampling_weights(data.labels, args.balance)
        self.images = training_tensor(data.images, data.alpha if args.alpha else None)
        alt = data.alt_images if data.alt_images is not None else data.images
        alt_alpha = data.alt_alpha if data.alt_alpha is not None else data.alpha
        self.alt = training_tensor(alt, alt_alpha if args.alpha else None)
        if self.vae is not None:
            self.latents = latent_table(self.vae, self.images, self.alt)
        self.labels = torch.as_tensor(data.labels)

    # -- one epoch ------------------------------------------------------------------------------

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
        """Sprites (augmented), label weights and the names as the network's text inputs (a
        dict of ``text``, and with cross-attention ``tokens`` and ``token_mask``; or None),
        label and text each dropped out so that guidance can follow the label, the text or
        both."""
        g, a = self.generator, self.args
        use_alt = torch.rand(len(idx), generator=g) < a.p_alt_frame
        flip = torch.rand(len(idx), generator=g) < (0.5 if a.flip else 0.0)
        if self.vae is not None:
            # Each sprite's latent distribution, drawn from as the autoencoder was trained.
            mean, std = self.latents[use_alt.long(), flip.long(), idx].chunk(2, dim=1)
            x = mean + std * torch.randn(mean.shape, generator=g)
        else:
            x = torch.where(use_alt[:, None, None, None], self.alt[idx], self.images[idx])
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        context = F.one_hot(self.labels[idx], self.data.num_labels).float()
        if self.text is None:
            context[torch.rand(len(idx), generator=g) < a.p_uncond] = 0
            return x, context, None
        dropped = drop_conditions(context, g, a.p_uncond, a.p_uncond_text, a.cond_dropout)
        return x, context, name_inputs(self.text, self.tokens, idx, flip, dropped)

    def train_epoch(self, bar: tqdm) -> float:
        a, g = self.args, self.generator
        order = torch.multinomial(self.weights, len(self.data), replacement=True, generator=g)
        losses = []
        for start in range(0, len(order), a.batch_size):
            x0, context, text = self.batch(order[start : start + a.batch_size])
            rows = len(x0)
            t = objectives.training_timesteps(a.noise_levels, self.schedule, rows, g)
            noise = torch.randn(x0.shape, generator=g)
            # sqrt(1 - abar) * noise: the forward process the course gets wrong.
            xt = self.schedule.q_sample(x0, t, noise)
            abar = self.schedule.alpha_bar(t).float()
            low = reduce_half(x0, g) if a.upscale else None
            target = objectives.training_target(a.prediction, x0, noise, abar)
            weight = objectives.loss_weight(a.prediction, abar / (1 - abar), a.min_snr)
            self_cond = torch.rand(rows, generator=g) < a.self_cond
            # Every process drew the whole batch (same generator); each trains on its share.
            mine = slice(self.rank, None, self.world)
            xt, target, weight, context, t, abar, self_cond = (
                v[mine].to(self.device) for v in (xt, target, weight, context, t, abar, self_cond)
            )
            text = {k: v[mine].to(self.device) for k, v in (text or {}).items()}
            low = low[mine].to(self.device) if low is not None else None
            xt = xt.contiguous(memory_format=self.memory_format)
            for group in self.opt.param_groups:
                group["lr"] = lr_at(self.step, self.total_steps, a, self.elapsed)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp):
                x0_prev = (
                    self.x0_estimate(xt, t, context, abar, self_cond, text, low)
                    if a.self_cond
                    else None
                )
                out = self.forward(xt, t, context, x0_prev, low=low, **text).float()
                per_row = (out - target).square().mean(dim=(1, 2, 3))
                # The batch mean as a sum over this share: DDP averages the processes' gradients,
                # which gives the mean over the whole batch even when the shares differ in size.
                loss = (weight * per_row).sum() * self.world / rows
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            update_ema(self.ema, self.model, self.step, self.args.ema_decay)
            self.step += 1
            # Kept on the device: reading a loss back every step would make the CPU wait for
            # the GPU, and a small network's steps are short enough for that to cost.
            losses.append(loss.detach())
            bar.update(1)
        return self.mean_loss(losses)

    def add_time(self, seconds: float) -> None:
        """Count an epoch's training time as the first process measured it: every process then
        anneals and stops by the same clock (replicas with different learning rates would part)."""
        clock = torch.tensor(self.elapsed + seconds, dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.broadcast(clock, src=0)
        self.elapsed = clock.item()

    def out_of_time(self) -> bool:
        return self.args.max_minutes is not None and self.elapsed > 60 * self.args.max_minutes

    def mean_loss(self, losses: list[torch.Tensor]) -> float:
        """The epoch's mean loss over the whole batches, for the log (each process holds the
        losses of its shares)."""
        loss = torch.stack(losses).mean()
        if self.world > 1:
            dist.all_reduce(loss)
            loss /= self.world
        return loss.item()

    @torch.no_grad()
    def x0_estimate(self, xt, t, context, abar, use, text, low) -> torch.Tensor:
        """Self-conditioning input: the network's own x0 estimate for rows in ``use``, else 0."""
        out = self.forward(xt, t, context, low=low, **text).float()
        eps = objectives.eps_from_output(self.args.prediction, out, xt, abar)
        x0 = objectives.x0_from_eps(xt, eps, abar).clamp(-1, 1)
        return torch.where(use[:, None, None, None], x0, torch.zeros_like(x0))

    # -- saving ---------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "elapsed": self.elapsed,
            "generator": self.generator.get_state(),
            "prior": self.prior,
            "torch_rng": torch.get_rng_state(),
            # Paths as text: a checkpoint holds data only, and torch.load(weights_only=True)
            # refuses any other object (--init, --text-encoder and --out are paths).
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(self.args).items()},
        }

    def save_checkpoint(self) -> None:
        state = self.checkpoint_state()
        atomic_write(self.args.out / "checkpoint.pt", lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self) -> None:
        """Continue from OUT/checkpoint.pt; a SystemExit naming the flags when this run's differ
        from the ones the checkpoint was trained with (RESUME_FLAGS)."""
        path = self.args.out / "checkpoint.pt"
        # weights_only: a checkpoint is data, never code; a pickled object in it is refused.
        state = torch.load(path, map_location=self.device, weights_only=True)
        differ = _changed_flags(state.get("args", {}), self.args)
        if differ:
            raise SystemExit(
                f"--resume: {path} was trained with {'; '.join(differ)}: pass the same flags "
                "to continue it, or choose another --out"
            )
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:  # a checkpoint from before the flags were saved, say
            raise SystemExit(
                f"--resume: {path} holds another network than these flags build: pass the "
                "flags it was trained with (its run folder's config.json has them)"
            ) from None
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.epoch, self.elapsed = state["step"], state["epoch"], state["elapsed"]
        self.generator.set_state(state["generator"])
        self.prior = state.get("prior", self.prior)
        torch.set_rng_state(state["torch_rng"])

    def pipeline(self) -> SpritePipeline:
        defaults = {**FALLBACK, **self.prior.get("sampling", {}), "guidance": self.args.guidance}
        model = copy.deepcopy(self.ema).to(memory_format=torch.contiguous_format)
        return SpritePipeline(
            model,
            self.schedule,
            self.data.label_names,
            device=self.device,
            defaults=defaults,
            text_encoder=self.clip,
            autoencoder=self.vae,
        )

    def export(self) -> SpritePipeline:
        """Make the run folder a loadable model holding the EMA weights."""
        pipe = self.pipeline()
        images = self.data.images
        # An RGBA model's palette is the colours of opaque pixels: white is not a colour there.
        pipe.palette = render.data_palette(
            images[self.data.alpha > 127] if self.args.alpha else images
        )
        a = self.args
        recipe = {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(a).items()
            if k not in ("data", "out", "resume", "push_to_hub")
        }
        training = {
            "data": {"source": self.data.source, "counts": self.data.counts()},
            "recipe": recipe,
            "epochs_done": self.epoch,
            "steps_done": self.step,
            "device": str(self.device),
            "hardware": describe(self.device) + (f" x {self.world}" if self.world > 1 else ""),
            "train_minutes": round(self.elapsed / 60, 1),
            "total_steps": self.prior["steps"] + self.step,
            "total_minutes": round(self.prior["minutes"] + self.elapsed / 60, 1),
            **({"autoencoder": self.vae.history} if self.vae is not None else {}),
            "credit": data_credit(a.data),
        }
        pipe.save_pretrained(a.out, extra={"training": training})
        return pipe

    def write_samples(self, pipe: SpritePipeline) -> Path:
        """One sheet of every label (a row each) and a denoising GIF per label; for an
        upscaler, rows of sprites: halved and enlarged again, upscaled, and the originals."""
        folder = self.args.out / "samples"
        folder.mkdir(exist_ok=True)
        rows = []
        if pipe.low_res:
            real = render.model_output(render.to_uint8(self.images[:8]))
            halved = reduce_half(self.images[:8], torch.Generator().manual_seed(0))
            low = render.model_output(render.to_uint8(halved))
            rows = [low.repeat(2, 1).repeat(2, 2), pipe.upscale(low, seed=0), real]
        for i, label in enumerate([] if pipe.low_res else pipe.labels):
            frames = list(pipe.stream(label, n=8, seed=i))
            rows.append(frames[-1].x)
            gif = [render.grid(f.x0, scale=4, cols=8) for f in frames]
            render.save_gif(gif, folder / f"epoch{self.epoch:04d}_{label}.gif")
        sheet = render.grid(np.concatenate(rows), scale=4, cols=8)
        render.save_png(sheet, folder / f"epoch{self.epoch:04d}.png")
        return render.save_png(sheet, self.args.out / "samples.png")


def text_table(clip: SpriteCLIP, data: SpriteDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen text embeddings of every sprite's name and of its mirrored name."""
    if data.names is None:
        raise SystemExit(f"--text-encoder: {data.source} has no sprite names (meta.json 'names')")
    with torch.no_grad():
        return (
            clip.encode_text(data.names).cpu(),
            clip.encode_text([mirror_name(n) for n in data.names]).cpu(),
        )


def token_table(
    clip: SpriteCLIP, data: SpriteDataset
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The frozen token states and masks (see SpriteCLIP.encode_tokens) of every sprite's name
    and of its mirrored name, both padded to the longest name."""
    names = (data.names, [mirror_name(n) for n in data.names])
    with torch.no_grad():
        encoded = [clip.encode_tokens(texts)[1:] for texts in names]
    longest = max(tokens.shape[1] for tokens, _ in encoded)
    return tuple(
        (
            F.pad(tokens, (0, 0, 0, longest - tokens.shape[1])).cpu(),
            F.pad(mask, (0, longest - mask.shape[1])).cpu(),
        )
        for tokens, mask in encoded
    )


def drop_conditions(
    context: torch.Tensor,
    generator: torch.Generator,
    p_uncond: float,
    p_uncond_text: float,
    cond_dropout: tuple[float, float, float] | None,
) -> torch.Tensor:
    """A text model's label and text dropout: zeroes the dropped labels of ``context`` in place
    and returns which rows drop their text. ``cond_dropout`` (neither, text only, label only)
    picks each example's branch in one draw; None drops label and text each on its own."""
    n = len(context)
    if cond_dropout is None:
        context[torch.rand(n, generator=generator) < p_uncond] = 0
        return torch.rand(n, generator=generator) < p_uncond_text
    neither, text_only, label_only = cond_dropout
    u = torch.rand(n, generator=generator)
    context[u < neither + text_only] = 0
    return (u < neither) | ((u >= neither + text_only) & (u < neither + text_only + label_only))


def name_inputs(
    text: tuple[torch.Tensor, torch.Tensor],
    tokens: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    idx: torch.Tensor,
    flip: torch.Tensor,
    dropped: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The network's text inputs for sprites ``idx`` from the tables of :func:`text_table` and
    :func:`token_table`: each name's pooled embedding, and with cross-attention its token states
    and mask; a flipped sprite gets its mirrored name ("left" <-> "right"), a dropped one none."""
    pooled = torch.where(flip[:, None], text[1][idx], text[0][idx])
    pooled[dropped] = 0
    if tokens is None:
        return {"text": pooled}
    (states, mask), (mirrored, mirrored_mask) = tokens
    kept = (~dropped & ~flip)[:, None], (~dropped & flip)[:, None]
    return {
        "text": pooled,
        "tokens": states[idx] * kept[0][..., None] + mirrored[idx] * kept[1][..., None],
        "token_mask": (mask[idx] & kept[0]) | (mirrored_mask[idx] & kept[1]),
    }


def start_distributed() -> tuple[int, int]:
    """(rank, world size): join the process group that torchrun set up, or (0, 1) alone."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def training_tensor(images: np.ndarray, alpha: np.ndarray | None) -> torch.Tensor:
    """Sprites on white as (n, 3, H, W) in [-1, 1], or with ``alpha`` as a 4th channel.

    The colours stay composited on white, as ``render.model_pixels`` gives them at inference,
    so an RGB model's weights start an RGBA model off on the task they already know.
    """
    pixels = images if alpha is None else np.concatenate([images, alpha[..., None]], axis=-1)
    return render.to_tensor(pixels)


def _check_autoencoder(args: argparse.Namespace, data: SpriteDataset) -> None:
    """--autoencoder's folder loads and fits the data, or a one-line SystemExit."""
    if args.upscale:
        sys.exit("--upscale works in pixels: it takes no --autoencoder")
    if not args.alpha:
        sys.exit("--autoencoder: a latent model draws RGBA sprites; add --alpha")
    try:
        vae = SpriteVAE.from_pretrained(args.autoencoder)
    except (OSError, ValueError) as err:
        sys.exit(f"--autoencoder: {err}")
    if vae.config.resolution != data.resolution or vae.config.in_channels != 4:
        sys.exit(
            f"--autoencoder: {args.autoencoder} encodes {vae.config.resolution}px sprites of "
            f"{vae.config.in_channels} channels; the data's are {data.resolution}px RGBA"
        )


def latent_table(vae: SpriteVAE, images: torch.Tensor, alt: torch.Tensor) -> torch.Tensor:
    """The autoencoder's latent mean and standard deviation of every sprite, as
    (2 frames, 2 mirrorings, n, 2 * latent channels, h, w): encoded once, so that a latent model
    trains as fast as its small latents allow."""
    table = []
    with torch.no_grad():
        for frames in (images, alt):
            sides = []
            for x in (frames, frames.flip(3)):
                mean, logvar = zip(*(vae.encode(part) for part in x.split(256)), strict=True)
                sides.append(torch.cat([torch.cat(mean), (0.5 * torch.cat(logvar)).exp()], 1))
            table.append(torch.stack(sides))
    return torch.stack(table)


def halve(x: torch.Tensor, how: str = "average", offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Sprites (n, C, H, W) at half their side: the 2x2 ``"average"`` (a downscaled picture,
    its alpha hardened again), or ``"pick"``, the pixel at ``offset`` of each 2x2 block (pixel
    art drawn at the smaller size keeps hard colours)."""
    if how == "pick":
        return x[:, :, offset[0] :: 2, offset[1] :: 2]
    average = F.avg_pool2d(x, 2)
    if x.shape[1] == 4:
        average[:, 3] = torch.where(average[:, 3] > 0, 1.0, -1.0)
    return average


def reduce_half(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An upscaler's low-resolution inputs: each sprite halved one of the two ways of
    :func:`halve` (the pick at a random offset), so that the upscaler learns both."""
    offset = tuple(torch.randint(0, 2, (2,), generator=generator).tolist())
    use_average = torch.rand(len(x), generator=generator) < 0.5
    picked = halve(x, "pick", offset)
    return torch.where(use_average[:, None, None, None], halve(x, "average"), picked)


def _cond_dropout(text: str) -> tuple[float, float, float]:
    try:
        shares = tuple(float(v) for v in text.split(","))
    except ValueError:
        shares = ()
    if len(shares) != 3 or min(shares) < 0 or sum(shares) > 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give three shares NEITHER,TEXT_ONLY,LABEL_ONLY, each >= 0, summing to <= 1"
        )
    return shares


def init_from(model: ContextUnet, folder: Path) -> dict:
    """Load a trained model's weights into ``model``; only a text part may be missing.

    An RGB model can start an RGBA one: its stem and output convolutions get an alpha channel
    whose weights start at zero. Likewise a model of sprites can start an upscaler of them: the
    stem's inputs for the low-resolution image start at zero, so it begins as the generator it
    was and learns to follow the small sprite. Self-attention added at more levels starts as
    the identity (its output projection is zero), so a trained model can grow it and go on
    from the same outputs. Returns the steps and minutes that model was trained.
    """
    pipe = SpritePipeline.from_pretrained(folder, device="cpu")
    ours, theirs = model.config.to_dict(), pipe.model.config.to_dict()
    # Dropout holds no weights, so a continuation may add or change it.
    growable = {"text_dim", "in_channels", "low_res", "cross_attention", "attention", "dropout"}
    differ = sorted(k for k in ours if k not in growable and ours[k] != theirs.get(k))
    # Attention may be added at more levels, never taken away.
    differ += [
        k for k in ("attention", "cross_attention") if not set(theirs.get(k, ())) <= set(ours[k])
    ]
    other_upscaler = theirs.get("low_res", 0) not in (0, ours["low_res"])
    if differ or other_upscaler or ours["in_channels"] < theirs["in_channels"]:
        raise SystemExit(f"--init {folder}: its network differs in {differ}; pass the same flags")
    state = pipe.model.state_dict()
    for name, param in model.state_dict().items():
        if name in state and state[name].shape != param.shape:
            grown = torch.zeros_like(param)
            grown[tuple(slice(0, n) for n in state[name].shape)] = state[name]
            state[name] = grown
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A text part, and attention grown beside a block, start at zero: the same outputs.
    new_parts = ("text_mlp.", ".cross.", ".attn.")
    if unexpected or any(not any(part in k for part in new_parts) for k in missing):
        raise SystemExit(f"--init {folder}: another network ({missing=}, {unexpected=})")
    training = pipe.config.get("training", {})
    return {
        "steps": training.get("total_steps", training.get("steps_done", 0)),
        "minutes": training.get("total_minutes", training.get("train_minutes", 0.0)),
        "from": str(folder),
        "sampling": _inherited_sampling(pipe.defaults, folder),
    }


def _inherited_sampling(defaults: dict, folder: Path) -> dict:
    """The sampling defaults a continuation of the model in ``folder`` starts with: all that
    was measured for that model (sampler, steps, palette stage, precision), so that its samples
    and its evaluation compare like with like, with ``measured_on`` naming where they were
    measured until ``python -m benchmarks.steps --write`` measures them again. The guidance
    is the run's own ``--guidance``."""
    kept = {k: v for k, v in defaults.items() if k != "guidance"}
    if "sampler_steps" in kept:
        kept.setdefault("measured_on", str(folder))
    return kept


# Flags a resumed run must repeat: they shape the network, its schedule or the data it learns.
RESUME_FLAGS = (
    "data", "split", "alpha", "channels", "blocks", "attention", "prediction", "self_cond",
    "text_encoder", "cross_attention", "autoencoder", "upscale", "schedule", "T", "dropout",
)  # fmt: skip


def _changed_flags(saved: dict, args: argparse.Namespace) -> list[str]:
    """``--flag OLD (this run: NEW)`` for every RESUME_FLAGS flag that differs from ``saved``
    (a checkpoint's args); only whether self-conditioning is on matters to the network."""

    def value(args: dict, name: str) -> object:
        v = args.get(name)
        if name == "self_cond":
            return bool(v)
        if name == "data" and v is not None and "://" not in str(v):
            return str(Path(v).resolve())
        return None if v is None else str(v)

    now = vars(args)
    return [
        f"--{name.replace('_', '-')} {saved.get(name)} (this run: {now.get(name)})"
        for name in RESUME_FLAGS
        if name in saved and value(saved, name) != value(now, name)
    ]


def _drop_rows_after(log_path: Path, epoch: int) -> None:
    """Forget log rows of epochs the checkpoint does not hold (a crash between log and save)."""
    if log_path.exists():
        with open(log_path, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if int(r[0]) <= epoch]
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerows(kept)


def export_run(trainer: Trainer) -> None:
    """The run folder as a model: weights, samples and card."""
    trainer.write_samples(trainer.export())
    write_model_card(trainer.args.out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        data = load_dataset(args.data)
        if args.split == "train":
            data = data.split(EVAL_HOLDOUT, EVAL_SPLIT_SEED)[0]
    except DataError as err:  # one line naming the file, not a traceback
        sys.exit(f"--data: {err}")
    if args.prediction == "edm" and args.min_snr is not None:
        sys.exit("--min-snr: EDM preconditioning (--prediction edm) weighs its loss itself")
    if args.alpha and data.alpha is None:
        sys.exit(f"--alpha: {args.data} has no alpha (rgba.npy beside images.npy)")
    if args.cross_attention and not args.text_encoder:
        sys.exit("--cross-attention: attends to the names' tokens, so it needs --text-encoder")
    if args.autoencoder:
        _check_autoencoder(args, data)
    if args.upscale and data.resolution % 2:
        sys.exit(f"--upscale: the sprites are {data.resolution}px, an odd side cannot be halved")
    args.out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(args, data)
    main_process = trainer.rank == 0  # the one that writes files and prints
    log_path = args.out / "loss.csv"
    if args.resume:
        if not (args.out / "checkpoint.pt").exists():
            sys.exit(f"--resume: no checkpoint.pt in {args.out}")
        trainer.load_checkpoint()
        if main_process:
            _drop_rows_after(log_path, trainer.epoch)
            print(f"resumed at epoch {trainer.epoch}, step {trainer.step}")
    elif log_path.exists() and main_process:
        sys.exit(f"{args.out} already holds a run: pass --resume or choose another --out")
    if main_process:
        print(
            f"{len(data)} sprites {data.counts()} on {trainer.device} x {trainer.world}, "
            f"{sum(p.numel() for p in trainer.model.parameters()) / 1e6:.2f}M parameters"
        )
    bar = tqdm(
        total=trainer.total_steps,
        initial=trainer.step,
        unit="step",
        dynamic_ncols=True,
        disable=None if main_process else True,
    )
    new_log = not log_path.exists()
    with open(log_path, "a", newline="") if main_process else contextlib.nullcontext() as f:
        if f is not None and new_log:
            csv.writer(f).writerow(["epoch", "step", "loss", "lr", "images_per_s", "elapsed_s"])
        saved = 0.0  # the first epoch is always saved: a run killed in its first minute resumes
        while trainer.epoch < args.epochs:
            t0 = time.time()
            loss = trainer.train_epoch(bar)
            trainer.epoch += 1
            trainer.add_time(time.time() - t0)
            speed = len(data) / (time.time() - t0)
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{speed:.0f}", epoch=trainer.epoch)
            out_of_time = trainer.out_of_time()
            last = out_of_time or trainer.epoch == args.epochs
            if f is not None:
                lr = trainer.opt.param_groups[0]["lr"]
                row = [trainer.epoch, trainer.step, f"{loss:.5f}", f"{lr:.3e}", f"{speed:.1f}"]
                csv.writer(f).writerow([*row, f"{trainer.elapsed:.1f}"])
                f.flush()
                if last or time.time() - saved >= args.checkpoint_every:
                    trainer.save_checkpoint()
                    saved = time.time()
                if trainer.epoch % args.sample_every == 0 and not last:
                    export_run(trainer)
            if out_of_time:
                print(f"stopping after {trainer.elapsed / 60:.1f} minutes (--max-minutes)")
                break
    bar.close()
    if main_process:
        # Also after a --resume of a finished run: the folder is re-exported with today's code.
        export_run(trainer)
        if args.push_to_hub:
            print("pushed to", push_to_hub(args.out, args.push_to_hub))
    if trainer.world > 1:
        # Every process waits for the first one's export: gloo aborts a process whose peers
        # tear the group down while it is still in it.
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
