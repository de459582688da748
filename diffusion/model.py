"""ContextUnet: the class-conditioned U-Net that predicts the noise in a sprite.

The shape follows the DeepLearning.AI course's ContextUnet (a down path, a bottleneck squeezed to
a vector, an up path with skip connections, time and context embeddings that scale and shift the
features) with its faults fixed: residual shortcuts are real 1x1 convolutions created once,
timesteps get a sinusoidal embedding, normalisation is GroupNorm, and an all-zero context maps to
a learned "no context" embedding so that one network serves classifier-free guidance.
A text embedding, when the config has one, is projected and added to the same embedding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass
class UnetConfig:
    """Everything needed to rebuild a ContextUnet; stored in a model's config.json."""

    num_labels: int = 6
    resolution: int = 16
    in_channels: int = 3
    channels: tuple[int, ...] = (64, 128, 128)
    blocks_per_level: int = 1
    emb_dim: int = 128
    groups: int = 8
    # Timesteps are divided by T before the sinusoidal embedding so one network fits any T.
    T: int = 1000
    # What the network outputs: "eps" (the noise, DDPM) or "v" (Salimans & Ho 2022,
    # v = sqrt(abar) * eps - sqrt(1 - abar) * x0), which stays well scaled at both ends of t.
    prediction: str = "eps"
    # Levels (0 = full resolution) whose blocks end in self-attention, e.g. (1, 2) = 8x8 and 4x4.
    attention: tuple[int, ...] = ()
    # Self-conditioning (Chen et al. 2023): the network also sees its previous x0 estimate.
    self_condition: bool = False
    # Size of a text embedding (SpriteCLIP's) that conditions the network beside the label;
    # 0 for a label-only model.
    text_dim: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.attention = tuple(self.attention)
        levels = len(self.channels)
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {self.prediction!r}")
        if any(not 0 <= level < levels for level in self.attention):
            raise ValueError(f"attention levels must lie in 0..{levels - 1}, got {self.attention}")
        if self.resolution % 2 ** (levels - 1):
            raise ValueError(f"resolution {self.resolution} must be divisible by 2^{levels - 1}")
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"every channel count must be divisible by groups={self.groups}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["attention"] = list(self.attention)
        return d


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of (fractional) timesteps in [0, 1], as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    # Scale to [0, 1000] so the fastest frequencies still resolve neighbouring steps.
    args = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, as a residual branch."""

    def __init__(self, channels: int, groups: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm; the embedding scales and shifts the middle features.

    With ``attention``, self-attention over the block's output follows, so that distant pixels
    of a small feature map can agree (on an outline's colour, say).
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, attention: bool = False):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        # Start each block as the identity so a deep net trains stably from the first step.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        # Only present when used, so that weights saved without attention load unchanged.
        if attention:
            self.attn = SelfAttention(cout, groups)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.skip(x) + self.conv2(F.silu(h))
        return self.attn(h) if hasattr(self, "attn") else h


class ContextUnet(nn.Module):
    """Predicts the noise from (x_t, t, context): ``model(x, t, context) -> eps`` (or v).

    x is (n, C, H, W) in about [-1, 1], t a float tensor (n,) of timesteps in [0, T] and context
    (n, num_labels) label weights: one-hot for a label, a mix for blends, all zeros for none.
    With ``config.self_condition``, ``x0_prev`` (n, C, H, W) is the previous x0 estimate
    (zeros, the default, for none). With ``config.text_dim``, ``text`` (n, text_dim) is the
    prompt's embedding (zeros, the default, for none). ``config.prediction`` says whether the
    output is eps or v.
    """

    def __init__(self, config: UnetConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config or UnetConfig(**kwargs)
        c = self.config
        ch, e = c.channels, c.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.label_emb = nn.Linear(c.num_labels, e, bias=False)
        self.null_emb = nn.Parameter(torch.zeros(e))
        if c.text_dim:
            self.text_mlp = nn.Sequential(nn.Linear(c.text_dim, e), nn.SiLU(), nn.Linear(e, e))
            # Zero at first: a text model fine-tuned from a label model starts as that model.
            nn.init.zeros_(self.text_mlp[-1].weight)
            nn.init.zeros_(self.text_mlp[-1].bias)
        stem_in = 2 * c.in_channels if c.self_condition else c.in_channels
        self.stem = nn.Conv2d(stem_in, ch[0], 3, padding=1)

        self.down = nn.ModuleList()
        skips, cin = [], ch[0]
        for level, cout in enumerate(ch):
            for _ in range(c.blocks_per_level):
                self.down.append(ResBlock(cin, cout, e, c.groups, level in c.attention))
                skips.append(cout)
                cin = cout
            if level < len(ch) - 1:
                self.down.append(nn.AvgPool2d(2))

        # The course's bottleneck: the smallest feature map squeezed to one vector per image,
        # then expanded back, so every pixel sees the whole sprite.
        side = c.resolution // 2 ** (len(ch) - 1)
        self.to_vec = nn.Sequential(nn.AvgPool2d(side), nn.SiLU())
        self.from_vec = nn.Sequential(
            nn.ConvTranspose2d(cin, cin, side, side), nn.GroupNorm(c.groups, cin), nn.SiLU()
        )
        self.mid = ResBlock(2 * cin, cin, e, c.groups)

        self.up = nn.ModuleList()
        for level, cout in reversed(list(enumerate(ch))):
            for _ in range(c.blocks_per_level):
                self.up.append(ResBlock(cin + skips.pop(), cout, e, c.groups, level in c.attention))
                cin = cout
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(
            nn.GroupNorm(c.groups, cin), nn.SiLU(), nn.Conv2d(cin, c.in_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def embed(self, t: Tensor, context: Tensor, text: Tensor | None = None) -> Tensor:
        """Joint time + context embedding; the null embedding fills in missing label weight."""
        temb = self.time_mlp(timestep_embedding(t / self.config.T, self.config.emb_dim))
        context = context.to(temb.dtype)
        missing = (1 - context.sum(dim=1, keepdim=True)).clamp(min=0)
        emb = temb + self.label_emb(context) + missing * self.null_emb
        if self.config.text_dim:
            # No prompt is the zero embedding, as in training's text dropout: the MLP maps it to
            # a learned "no text" term, which skipping the MLP would leave out.
            if text is None:
                text = torch.zeros(len(temb), self.config.text_dim, device=temb.device)
            emb = emb + self.text_mlp(text.to(temb.dtype))
        return emb

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor,
        x0_prev: Tensor | None = None,
        text: Tensor | None = None,
    ) -> Tensor:
        emb = self.embed(t, context, text)
        if self.config.self_condition:
            x = torch.cat([x, torch.zeros_like(x) if x0_prev is None else x0_prev.to(x)], dim=1)
        h = self.stem(x)
        skips = []
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
                skips.append(h)
            else:
                h = layer(h)
        h = self.mid(torch.cat([h, self.from_vec(self.to_vec(h))], dim=1), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)
