"""All of DDPM on one screen: train a ContextUnet to predict noise, then sample by ancestral steps.

    python examples/ddpm_in_one_screen.py --data ../shared/data/dawnlike16 --steps 2000

Written out by hand over the package's schedule and model, so each line of Ho et al. (2020),
Algorithms 1 and 2, can be read here. The package's ``train.py`` and ``samplers.py`` do the same
with the refinements a real run needs (EMA, guidance, faster samplers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from diffusion import ContextUnet, Schedule, render
from diffusion.data import load_dataset


def train(model: ContextUnet, schedule: Schedule, images: torch.Tensor, labels: torch.Tensor,
          steps: int, batch: int = 64, seed: int = 0) -> list[float]:  # fmt: skip
    """Algorithm 1: noise a sprite to a random t, teach the network to name the noise."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    context = F.one_hot(labels, model.config.num_labels).float()
    losses = []
    for _ in range(steps):
        i = torch.randint(len(images), (batch,), generator=g)
        x0, c = images[i], context[i]
        t = torch.randint(1, schedule.T + 1, (batch,), generator=g).float()
        eps = torch.randn(x0.shape, generator=g)
        abar = schedule.alpha_bar(t).float().view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps  # sqrt(1 - abar), not (1 - abar)
        loss = F.mse_loss(model(x_t, t, c), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def sample(model: ContextUnet, schedule: Schedule, label: int, n: int, seed: int = 0) -> np.ndarray:
    """Algorithm 2: from pure noise, remove the predicted noise one step at a time."""
    g = torch.Generator().manual_seed(seed)
    config = model.config
    c = F.one_hot(torch.full((n,), label), config.num_labels).float()
    x = torch.randn(n, config.in_channels, config.resolution, config.resolution, generator=g)
    for t in range(schedule.T, 0, -1):
        beta = schedule.betas[t - 1].float()
        abar = schedule.alpha_bar(float(t)).float()
        eps = model(x, torch.full((n,), float(t)), c)
        mean = (x - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()
        z = torch.randn(x.shape, generator=g) if t > 1 else torch.zeros_like(x)
        x = mean + beta.sqrt() * z  # sigma_t^2 = beta_t, Ho et al.'s first choice
    return render.to_uint8(x)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/dawnlike16")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", default="out/ddpm_in_one_screen.png")
    args = p.parse_args()
    data = load_dataset(args.data)
    schedule = Schedule.linear(T=500)
    model = ContextUnet(num_labels=data.num_labels, resolution=data.resolution, T=schedule.T)
    losses = train(model, schedule, render.to_tensor(data.images), torch.as_tensor(data.labels),
                   args.steps)  # fmt: skip
    print(f"loss {np.mean(losses[:50]):.3f} -> {np.mean(losses[-50:]):.3f}")
    sprites = np.concatenate([sample(model, schedule, k, 8) for k in range(data.num_labels)])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    print(render.save_png(render.grid(sprites, scale=4, cols=8), args.out))
