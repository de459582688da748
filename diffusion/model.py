"""ContextUnet: the class-conditioned U-Net that predicts the noise in a sprite.

The shape follows the DeepLearning.AI course's ContextUnet (a down path, a bottleneck squeezed to
a vector, an up path with skip connections, time and context embeddings that scale and shift the
features) with its faults fixed: residual shortcuts are real 1x1 convolutions created once,
timesteps get a sinusoidal embedding, normalisation is GroupNorm, and an all-zero context maps to
a learned "no context" embedding so that one network serves classifier-free guidance.
A text embedding, when the config has one, is projected and added to the same embedding; with
``cross_attention`` the blocks of those levels also attend to the prompt's every token, as
Stable Diffusion's U-Net attends to its text encoder's token states.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .objectives import PREDICTIONS

# What a config may ask for, checked before anything is allocated: generous for any sprite model,
# yet small enough that a config.json from an untrusted folder cannot ask for more memory than a
# machine has (channels 100000 would be a 360 GB network, T 1e10 an 80 GB schedule).
BOUNDS: dict[str, tuple[int, int]] = {
    "num_labels": (1, 4096),
    "resolution": (4, 256),
    "channels": (1, 1024),  # per level
    "levels": (1, 6),  # len(channels)
    "blocks_per_level": (1, 8),
    "emb_dim": (2, 4096),
    "groups": (1, 1024),
    "T": (1, 100_000),  # also the most steps a model folder's schedule may have
    "text_dim": (0, 4096),
    # Channels of what the network denoises: 3 (RGB) or 4 (RGBA) pixels, or a latent model's
    # latent channels (see diffusion.autoencoder).
    "in_channels": (1, 16),
}
MAX_PARAMETERS = 200_000_000  # 800 MB of float32 weights; the shipped models have about 2M
HEAD_DIM = 32  # channels per self-attention head


def check_whole(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as a whole number in [low, high], or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value}")
    return value


def config_from_dict(cls: type, fields: Any, what: str) -> Any:
    """``cls(**fields)`` for a config dataclass read from JSON: a ValueError naming ``what``
    when ``fields`` is no JSON object or has fields ``cls`` does not know (``cls`` checks the
    values)."""
    if not isinstance(fields, dict):
        raise ValueError(f"the {what} config must be a JSON object, got {type(fields).__name__}")
    unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
    if unknown:
        raise ValueError(f"the {what} config has unknown fields {unknown}")
    return cls(**fields)


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
    # What the network outputs: "eps" (the noise, DDPM), "v" (Salimans & Ho 2022,
    # v = sqrt(abar) * eps - sqrt(1 - abar) * x0), which stays well scaled at both ends of t,
    # or "edm" (Karras et al. 2022's preconditioned output); diffusion.objectives has the maths.
    prediction: str = "eps"
    # Levels (0 = full resolution) whose blocks end in self-attention, e.g. (1, 2) = 8x8 and 4x4.
    attention: tuple[int, ...] = ()
    # Self-conditioning (Chen et al. 2023): the network also sees its previous x0 estimate.
    self_condition: bool = False
    # Size of a text embedding (SpriteCLIP's) that conditions the network beside the label;
    # 0 for a label-only model.
    text_dim: int = 0
    # Levels whose blocks end in cross-attention to the prompt's token states (text_dim wide
    # each), beside the pooled embedding, e.g. (1, 2) = 8x8 and 4x4; a text model only.
    cross_attention: tuple[int, ...] = ()
    # An upscaler (SR3, Saharia et al. 2021) also sees a low-resolution image of this side (and
    # of in_channels), enlarged nearest-neighbour to ``resolution``; 0 for any other model.
    low_res: int = 0
    # Dropout before each block's second convolution, in training only (Ho et al. 2020 use 0.1
    # on CIFAR-10; Karras et al. 2022 find it matters most on small datasets, where a network
    # otherwise learns its training images by heart). It holds no weights: sampling ignores it.
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("num_labels", "resolution", "blocks_per_level", "emb_dim", "groups", "T"):
            check_whole(name, getattr(self, name), *BOUNDS[name])
        check_whole("text_dim", self.text_dim, *BOUNDS["text_dim"])
        check_whole("in_channels", self.in_channels, *BOUNDS["in_channels"])
        check_whole("low_res", self.low_res, 0, self.resolution - 1)
        if self.low_res and self.resolution % self.low_res:
            raise ValueError(f"low_res {self.low_res} must divide resolution {self.resolution}")
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim must be even (sines and cosines), got {self.emb_dim}")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not isinstance(self.self_condition, bool):
            raise ValueError(f"self_condition must be true or false, got {self.self_condition!r}")
        for name in ("channels", "attention", "cross_attention"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(
                    f"{name} must be a list of whole numbers, got {getattr(self, name)!r}"
                )
        check_whole("the number of levels (channels)", len(self.channels), *BOUNDS["levels"])
        self.channels = tuple(
            check_whole("channels", c, *BOUNDS["channels"]) for c in self.channels
        )
        levels = len(self.channels)
        self.attention = tuple(
            check_whole("attention levels", a, 0, levels - 1) for a in self.attention
        )
        self.cross_attention = tuple(
            check_whole("cross_attention levels", a, 0, levels - 1) for a in self.cross_attention
        )
        if self.cross_attention and not self.text_dim:
            raise ValueError(
                "cross_attention attends to a prompt: it needs a text model (text_dim)"
            )
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.resolution % 2 ** (levels - 1):
            raise ValueError(f"resolution {self.resolution} must be divisible by 2^{levels - 1}")
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"every channel count must be divisible by groups={self.groups}")
        for kind in ("attention", "cross_attention"):
            for level in getattr(self, kind):
                c = self.channels[level]
                if c % max(1, c // HEAD_DIM):
                    raise ValueError(
                        f"{kind} at level {level}: its {c} channels must split evenly into "
                        f"{max(1, c // HEAD_DIM)} heads"
                    )

    @classmethod
    def from_dict(cls, fields: Any) -> UnetConfig:
        """The config saved by :meth:`to_dict` (a model's config.json "model"), checked: a
        ValueError names the first field that is unknown, of the wrong type or out of bounds."""
        return config_from_dict(cls, fields, "model")

    def parameter_count(self) -> int:
        """The number of weights a ContextUnet of this config holds, counted without
        allocating them (the network is built on PyTorch's meta device)."""
        with torch.device("meta"):
            return sum(p.numel() for p in ContextUnet(self).parameters())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["attention"] = list(self.attention)
        d["cross_attention"] = list(self.cross_attention)
        return d


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of (fractional) timesteps in [0, 1], as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    # Scale to [0, 1000] so the fastest frequencies still resolve neighbouring steps.
    args = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class _Conv3x3(nn.Conv2d):
    """A 3x3 convolution padded by one pixel: with zeros, or with ``circular=True`` with the
    pixels of the opposite edge, so that the network sees its picture as a torus and what it
    draws tiles. An argument, not a flag on the module: a run beside it on the same network keeps
    zero padding, and torch.compile traces it (a guard per value) without breaking the graph.
    Its weights are named as nn.Conv2d's, so saved models load."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)

    def forward(self, x: Tensor, circular: bool = False) -> Tensor:
        if circular:
            return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), self.weight, self.bias)
        return super().forward(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, as a residual branch."""

    def __init__(self, channels: int, groups: int, head_dim: int = HEAD_DIM) -> None:
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


class CrossAttention(nn.Module):
    """Multi-head attention from the pixels of a feature map to a prompt's token states, as a
    residual branch (Rombach et al. 2022's text conditioning).

    A learned "null" token is always there to attend to, so that no prompt (every token masked
    out) is an input like any other, as training's text dropout shows it. The output projection
    starts at zero: a block grown with it computes exactly what it did before.
    """

    def __init__(self, channels: int, text_dim: int, groups: int, head_dim: int = HEAD_DIM):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.null = nn.Parameter(torch.zeros(1, 1, text_dim))
        self.text_norm = nn.LayerNorm(text_dim)
        self.kv = nn.Linear(text_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        n, c, h, w = x.shape
        heads = self.heads
        words = torch.cat([self.null.expand(n, -1, -1).to(tokens.dtype), tokens], dim=1)
        keep = torch.cat([mask.new_ones(n, 1), mask], dim=1)
        k, v = self.kv(self.text_norm(words)).reshape(n, -1, 2, heads, c // heads).unbind(2)
        q = self.q(self.norm(x)).reshape(n, heads, c // heads, h * w).transpose(-1, -2)
        out = F.scaled_dot_product_attention(
            q, k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype),
            attn_mask=keep[:, None, None, :],
        )  # fmt: skip
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm; the embedding scales and shifts the middle features.

    With ``attention``, self-attention over the block's output follows, so that distant pixels
    of a small feature map can agree (on an outline's colour, say); with ``cross_text`` (the
    width of a prompt's token states), cross-attention to the prompt's tokens comes last.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        emb_dim: int,
        groups: int,
        attention: bool = False,
        cross_text: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = _Conv3x3(cin, cout)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _Conv3x3(cout, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        # Start each block as the identity so a deep net trains stably from the first step.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        # Only present when used, so that weights saved without attention load unchanged.
        if attention:
            self.attn = SelfAttention(cout, groups)
        if cross_text:
            self.cross = CrossAttention(cout, cross_text, groups)

    def forward(
        self,
        x: Tensor,
        emb: Tensor,
        words: tuple[Tensor, Tensor] | None = None,
        circular: bool = False,
    ) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)), circular)
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.skip(x) + self.conv2(self.drop(F.silu(h)), circular)
        if hasattr(self, "attn"):
            h = self.attn(h)
        return self.cross(h, *words) if hasattr(self, "cross") else h


class ContextUnet(nn.Module):
    """Predicts the noise from (x_t, t, context): ``model(x, t, context) -> eps`` (or v).

    x is (n, C, H, W) in about [-1, 1], t a float tensor (n,) of timesteps in [0, T] and context
    (n, num_labels) label weights: one-hot for a label, a mix for blends, all zeros for none.
    With ``config.self_condition``, ``x0_prev`` (n, C, H, W) is the previous x0 estimate
    (zeros, the default, for none). With ``config.text_dim``, ``text`` (n, text_dim) is the
    prompt's embedding (zeros, the default, for none); with ``config.cross_attention`` also
    ``tokens`` (n, L, text_dim), its token states, and ``token_mask`` (n, L), which of them are
    words (none, the default, for no prompt). With ``config.low_res`` (an upscaler),
    ``low`` (n, C, low_res, low_res) is the image to enlarge. ``circular=True`` pads every 3x3
    convolution with the opposite edge instead of zeros (tileable sprites). ``config.prediction``
    says whether the output is eps or v.
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
        stem_in = c.in_channels * (1 + c.self_condition + bool(c.low_res))
        self.stem = _Conv3x3(stem_in, ch[0])

        self.down = nn.ModuleList()
        skips, cin = [], ch[0]
        for level, cout in enumerate(ch):
            for _ in range(c.blocks_per_level):
                self.down.append(ResBlock(cin, cout, e, c.groups, *self._attends(level)))
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
        self.mid = ResBlock(2 * cin, cin, e, c.groups, dropout=c.dropout)

        self.up = nn.ModuleList()
        for level, cout in reversed(list(enumerate(ch))):
            for _ in range(c.blocks_per_level):
                self.up.append(
                    ResBlock(cin + skips.pop(), cout, e, c.groups, *self._attends(level))
                )
                cin = cout
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(
            nn.GroupNorm(c.groups, cin), nn.SiLU(), _Conv3x3(cin, c.in_channels)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _attends(self, level: int) -> tuple[bool, int, float]:
        """A block's (self-attention?, width of the token states it attends to, 0 for none,
        dropout)."""
        c = self.config
        return level in c.attention, c.text_dim if level in c.cross_attention else 0, c.dropout

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
        low: Tensor | None = None,
        tokens: Tensor | None = None,
        token_mask: Tensor | None = None,
        circular: bool = False,
    ) -> Tensor:
        emb = self.embed(t, context, text)
        words = None
        if self.config.cross_attention:
            if tokens is None:  # no prompt: nothing but the null token to attend to
                tokens = emb.new_zeros(len(emb), 1, self.config.text_dim)
                token_mask = torch.zeros(len(emb), 1, dtype=torch.bool, device=emb.device)
            elif token_mask is None:
                raise ValueError("tokens= needs token_mask= (which token states are words)")
            words = (tokens, token_mask.bool())
        if self.config.self_condition:
            x = torch.cat([x, torch.zeros_like(x) if x0_prev is None else x0_prev.to(x)], dim=1)
        if self.config.low_res:
            if low is None:
                raise ValueError("an upscaler needs the low-resolution image: low=")
            factor = self.config.resolution // self.config.low_res
            x = torch.cat([x, F.interpolate(low.to(x), scale_factor=factor, mode="nearest")], 1)
        h = self.stem(x, circular)
        skips = []
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, words, circular)
                skips.append(h)
            else:
                h = layer(h)
        h = self.mid(torch.cat([h, self.from_vec(self.to_vec(h))], dim=1), emb, None, circular)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb, words, circular)
            else:
                h = layer(h)
        return self.out[-1](self.out[:-1](h), circular)
