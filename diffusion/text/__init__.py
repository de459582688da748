"""SpriteCLIP: a small text-image model trained contrastively on (sprite, name) pairs.

CLIP (Radford et al. 2021) at the scale of a 16x16 sprite: a word-piece tokenizer (the
``tokenizers`` library, so an unseen word still reads as pieces), a two-layer text transformer
and a four-layer CNN map a name and a sprite to unit vectors in one space, trained so that each
sprite's vector is nearest its own name's among the batch (the symmetric InfoNCE loss).

The text half conditions the diffusion model (``UnetConfig.text_dim``); the image half scores
how well a generated sprite matches its prompt (``diffusion.evaluate``). Train one with
``python -m diffusion.text --data DIR --out FOLDER``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor, nn
from torch.nn import functional as F

from .. import render
from ..files import atomic_write, read_config, write_config
from ..model import check_whole

FORMAT = "spriteclip/1"
PAD, UNK = "[PAD]", "[UNK]"
# Words that change meaning when a sprite is mirrored, so a flipped sprite gets a mirrored name.
MIRRORED = {"left": "right", "nw": "ne", "sw": "se", "west": "east"}
MIRRORED |= {b: a for a, b in MIRRORED.items()}


# What a SpriteCLIP folder's config may ask for, checked before anything is allocated: at the
# top of every bound the encoders hold about 190M weights (the shipped one about 0.9M).
CLIP_BOUNDS: dict[str, tuple[int, int]] = {
    "vocab_size": (2, 32_768),
    "max_tokens": (1, 256),
    "width": (1, 1024),
    "layers": (1, 12),
    "heads": (1, 64),
    "embed_dim": (1, 1024),
    "resolution": (4, 256),
}


@dataclass
class ClipConfig:
    """Everything needed to rebuild a SpriteCLIP; stored in its config.json."""

    vocab_size: int = 512
    max_tokens: int = 16
    width: int = 128
    layers: int = 2
    heads: int = 4
    embed_dim: int = 128
    resolution: int = 16

    def __post_init__(self) -> None:
        for name, (low, high) in CLIP_BOUNDS.items():
            check_whole(name, getattr(self, name), low, high)
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must divide into heads ({self.heads})")

    @classmethod
    def from_dict(cls, fields: Any) -> ClipConfig:
        """A config from its JSON object; ValueError for anything else or an unknown field."""
        if not isinstance(fields, dict):
            raise ValueError("model must be a JSON object of the encoder's settings")
        if unknown := sorted(set(fields) - set(CLIP_BOUNDS)):
            raise ValueError(f"unknown settings {unknown}; known: {sorted(CLIP_BOUNDS)}")
        return cls(**fields)


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A lower-casing word-piece tokenizer fitted to ``texts``.

    A vocabulary smaller than the number of distinct words keeps only frequent words whole and
    splits the rest into pieces, so the pieces are trained too and carry meaning to new words.
    """
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK])
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def words_of(text: str) -> list[str]:
    """The words of a text as the tokenizer sees them (lower case, punctuation apart)."""
    return [w for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text.lower())]


def mirror_name(name: str) -> str:
    """The name of the horizontally flipped sprite: 'wall left' -> 'wall right'."""
    return " ".join(MIRRORED.get(w, w) for w in name.split())


def paraphrases(name: str) -> list[str]:
    """A name and the ways a prompt may say the same: 'grey wolf' -> ['grey wolf', 'a grey
    wolf', 'gray wolf']."""
    article = "an" if name[:1] in "aeiou" else "a"
    forms = [name, f"{article} {name}"]
    words = name.split()
    for a, b in (("grey", "gray"), ("gray", "grey")):
        if a in words:
            forms.append(" ".join(b if w == a else w for w in words))
    return forms


def halve_sprites(images: np.ndarray, side: int) -> np.ndarray:
    """uint8 (n, H, W, 3) sprites shrunk to ``side`` by averaging square blocks (a 32x32 tile
    seen at 16x16, as SpriteCLIP's image tower reads them); H must be a multiple of ``side``."""
    n, h, w, c = images.shape
    if h % side or w != h:
        raise ValueError(f"{h}x{w} sprites cannot be shrunk to {side}x{side} by whole blocks")
    k = h // side
    blocks = images.reshape(n, side, k, side, k, c).astype(np.float32)
    return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)


class TextEncoder(nn.Module):
    """Token and position embeddings, a pre-norm transformer, the mean over real tokens."""

    def __init__(self, c: ClipConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(c.vocab_size, c.width)
        self.positions = nn.Parameter(torch.randn(c.max_tokens, c.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            c.width, c.heads, 2 * c.width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.width)
        self.proj = nn.Linear(c.width, c.embed_dim, bias=False)

    def hidden(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Every token's state (n, L, width) before the mean; padding's states are zero."""
        h = self.tokens(ids) + self.positions[: ids.shape[1]]
        h = self.norm(self.transformer(h, src_key_padding_mask=~mask))
        return torch.where(mask[..., None], h, torch.zeros_like(h))

    def pool(self, h: Tensor, mask: Tensor) -> Tensor:
        """The text's embedding (n, embed_dim): the mean of its tokens' states, projected."""
        m = mask[..., None].to(h.dtype)
        return self.proj((h * m).sum(1) / m.sum(1).clamp(min=1))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.pool(self.hidden(ids, mask), mask)


class ImageEncoder(nn.Module):
    """Four 3x3 convolutions (two of them halving the size), then one linear map."""

    def __init__(self, c: ClipConfig) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU()]

        side = c.resolution // 4
        self.net = nn.Sequential(
            *block(3, 32, 1), *block(32, 64, 2), *block(64, 128, 2), *block(128, 128, 1),
            nn.Flatten(), nn.Linear(128 * side * side, c.embed_dim, bias=False),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SpriteCLIP(nn.Module):
    """Text and sprites in one embedding space: ``encode_text`` / ``encode_image`` give unit
    vectors whose dot product says how well a sprite matches a description."""

    def __init__(self, config: ClipConfig, tokenizer: Tokenizer, words: Sequence[str]) -> None:
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        self.words = frozenset(words)  # every word of the training names, for unknown_words
        self.text = TextEncoder(config)
        self.image = ImageEncoder(config)
        # CLIP's learned temperature, stored as a log and started at 1/0.07.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(PAD), pad_token=PAD)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids and the mask of real tokens, (n, L) each, padded to the longest text."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], device=self.device)
        mask = torch.tensor([e.attention_mask for e in encodings], device=self.device).bool()
        if not bool(mask.any(dim=1).all()):
            raise ValueError("a description must hold at least one word")
        if ids.shape[1] > self.config.max_tokens:
            raise ValueError(
                f"a description may be at most {self.config.max_tokens} word pieces long "
                f"(about 5 words), got {ids.shape[1]}"
            )
        return ids, mask

    def fits(self, text: str) -> bool:
        """Whether ``text`` is within the ``max_tokens`` word pieces a description may have."""
        return sum(self.tokenizer.encode(text).attention_mask) <= self.config.max_tokens

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` that no training name used; they are read as word pieces."""
        return [w for w in dict.fromkeys(words_of(text)) if w not in self.words]

    def pieces(self, text: str) -> list[str]:
        """How the tokenizer reads ``text``, e.g. ['fire', 'ant'] or ['dragon', '##fly']."""
        return self.tokenizer.encode(text).tokens

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        return F.normalize(self.text(*self.tokenize(texts)), dim=-1)

    def encode_tokens(self, texts: Sequence[str]) -> tuple[Tensor, Tensor, Tensor]:
        """``encode_text``'s unit vectors (n, embed_dim) with the token states they pool: (n, L,
        embed_dim), each projected and divided by its text's pooled norm, so that the mean over
        a text's real tokens is its unit vector, and the mask (n, L) of real tokens."""
        ids, mask = self.tokenize(texts)
        h = self.text.hidden(ids, mask)
        pooled = self.text.pool(h, mask)
        norm = pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # as F.normalize
        return pooled / norm, self.text.proj(h) / norm[:, None], mask

    def encode_image(self, images: np.ndarray | Tensor) -> Tensor:
        """uint8 (n, H, W, 3) sprites, or a tensor (n, 3, H, W) in [-1, 1]. RGBA sprites
        (n, H, W, 4) are seen on white, as the training sprites were."""
        if isinstance(images, np.ndarray):
            images = render.to_tensor(render.composite(images, "white"))
        return F.normalize(self.image(images.to(self.device)), dim=-1)

    @torch.no_grad()
    def score(self, images: np.ndarray, texts: Sequence[str]) -> Tensor:
        """How well each sprite matches its description: the cosine similarity (n,) of sprite
        i and ``texts[i]`` (one text for every sprite, or one each), CLIP's score."""
        return (self.encode_image(images) * self.encode_text(texts)).sum(-1)

    def forward(self, images: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        """Image-text logits (n, n) of matching pairs: CLIP's scaled cosine similarities."""
        img = F.normalize(self.image(images), dim=-1)
        txt = F.normalize(self.text(ids, mask), dim=-1)
        return self.logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T

    # -- files ----------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike, extra: dict | None = None) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"format": FORMAT, "model": asdict(self.config), "words": sorted(self.words)}
        atomic_write(folder / "tokenizer.json", self.tokenizer.to_str())
        write_config(folder / "config.json", config | (extra or {}))
        atomic_write(folder / "model.safetensors", lambda f: safetensors.torch.save_model(self, f))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> SpriteCLIP:
        folder = Path(folder)
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} is not a SpriteCLIP folder: {name} is missing")
        config_path = folder / "config.json"
        config = read_config(config_path)
        try:
            if config.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} config ({config.get('format')=})")
            clip_config = ClipConfig.from_dict(config.get("model"))
            words = config.get("words")
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise ValueError("words must be a list of the training names' words")
        except ValueError as err:
            raise ValueError(f"{config_path}: {err}") from None
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        clip = cls(clip_config, tokenizer, words)
        safetensors.torch.load_model(clip, folder / "model.safetensors", device="cpu")
        if not all(bool(torch.isfinite(p).all()) for p in clip.parameters()):
            raise ValueError(f"{folder / 'model.safetensors'}: holds NaN or infinite weights")
        return clip.eval()


def clip_loss(logits: Tensor) -> Tensor:
    """Symmetric InfoNCE: each image must pick its own text among the batch, and vice versa."""
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.no_grad()
def retrieval(
    clip: SpriteCLIP, images: np.ndarray, names: Sequence[str], candidates: int = 20, seed: int = 0
) -> dict[str, float]:
    """How often the right partner ranks first, on pairs the model may not have seen.

    ``image_to_text``: a sprite's own name is the nearest of all ``names``; ``text_to_image``:
    the other way round; ``of_{candidates}``: the own name is nearest among itself and
    ``candidates - 1`` other names drawn at random (chance 1/candidates).
    """
    sim = (clip.encode_image(images) @ clip.encode_text(names).T).cpu()
    n = len(names)
    own = torch.arange(n)
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.delete(np.arange(n), i), candidates - 1, replace=False) for i in own]
    others = sim.gather(1, torch.as_tensor(np.stack(picks)))
    return {
        "pairs": n,
        "image_to_text": float((sim.argmax(1) == own).float().mean()),
        "text_to_image": float((sim.argmax(0) == own).float().mean()),
        f"of_{candidates}": float((sim.diagonal()[:, None] > others).all(1).float().mean()),
        "chance_all": 1 / n,
        f"chance_of_{candidates}": 1 / candidates,
    }


# -- training -------------------------------------------------------------------------------------


def train_clip(
    images: np.ndarray,
    names: Sequence[str],
    *,
    alt_images: np.ndarray | None = None,
    config: ClipConfig | None = None,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[int, float], object] | None = None,
    paraphrase: bool = False,
) -> SpriteCLIP:
    """Fit a SpriteCLIP to (sprite, name) pairs, with flips (and mirrored names) and the
    second animation frame as augmentation; with ``paraphrase``, each draw of a pair says its
    name one of the ways of :func:`paraphrases`. ``log(epoch, mean loss)`` after every epoch."""
    torch.manual_seed(seed)
    config = config or ClipConfig(resolution=images.shape[1])
    variants = [paraphrases(name) if paraphrase else [name] for name in names]
    ways = max(len(v) for v in variants)
    # texts[way][i]: sprite i's name said the way-th way (its own first form when it has fewer).
    texts = [[v[k] if k < len(v) else v[0] for v in variants] for k in range(ways)]
    tokenizer = train_tokenizer([t for way in texts for t in way], config.vocab_size)
    clip = SpriteCLIP(config, tokenizer, {w for way in texts for t in way for w in words_of(t)})
    # A prompt longer than max_tokens is refused, so a name that long cannot be learned: its
    # other ways of saying it fall back to its first form, and a sprite whose first form is
    # too long is left out.
    fits = [[clip.fits(t) and clip.fits(mirror_name(t)) for t in way] for way in texts]
    keep = [i for i in range(len(names)) if fits[0][i]]
    if len(keep) < len(names):
        warnings.warn(f"{len(names) - len(keep)} names over {config.max_tokens} word pieces "
                      "left out of training", stacklevel=2)  # fmt: skip
    texts = [
        [way[i] if ok[i] else texts[0][i] for i in keep]
        for way, ok in zip(texts, fits, strict=True)
    ]
    images = images[keep]
    alt_images = alt_images[keep] if alt_images is not None else None
    said = [t for way in texts for t in way]
    # One call pads every text to one length: (flipped?, way, sprite, token).
    ids, masks = clip.tokenize(said + [mirror_name(t) for t in said])
    ids, masks = (t.reshape(2, ways, len(keep), -1) for t in (ids, masks))
    x = render.to_tensor(images)
    alt = render.to_tensor(alt_images) if alt_images is not None else x
    opt = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.1)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    clip.train()
    for epoch in range(1, epochs + 1):
        losses = []
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            flip = torch.rand(len(idx), generator=g) < 0.5
            use_alt = (torch.rand(len(idx), generator=g) < 0.5)[:, None, None, None]
            img = torch.where(use_alt, alt[idx], x[idx])
            img = torch.where(flip[:, None, None, None], img.flip(3), img)
            way = torch.randint(0, ways, (len(idx),), generator=g) if ways > 1 else 0
            at = (flip.long(), way, idx)
            loss = clip_loss(clip(img, ids[at], masks[at]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        if log is not None:
            log(epoch, float(np.mean(losses)))
    return clip.eval()


def _named_split(source: str, side: int | None = None) -> tuple[Any, Any]:
    """The evaluator's (training, held-out) split of a dataset with sprite names, its sprites
    shrunk to ``side`` (see :func:`halve_sprites`) when one is given."""
    from ..data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, load_dataset

    data = load_dataset(source)
    if data.names is None:
        raise SystemExit(f"{source}: no sprite names (meta.json 'names' or 'paths') to learn from")
    if side is not None and data.resolution != side:
        if data.resolution % side:
            raise SystemExit(f"{source}: {data.resolution}px sprites do not shrink to {side}px")
        alt = data.alt_images
        data = dataclasses.replace(
            data,
            images=halve_sprites(data.images, side),
            alt_images=None if alt is None else halve_sprites(alt, side),
            alpha=None,  # SpriteCLIP sees sprites on white, as ``images`` hold them
            alt_alpha=None,
        )
    return data.split(EVAL_HOLDOUT, EVAL_SPLIT_SEED)


def measure(clip: SpriteCLIP, held: Any, train: Any | None = None) -> dict[str, dict]:
    """:func:`retrieval` on held-out pairs (and on as many training pairs, given ``train``),
    each with ``unseen_names``: the share of names holding a word the model never saw. Names
    too long to be a prompt (see :meth:`SpriteCLIP.fits`) are left out and counted in
    ``too_long``."""
    pairs = {"held_out": (held.images, held.names)}
    if train is not None:
        pairs["training"] = (train.images[: len(held)], train.names[: len(held)])
    scores = {}
    for split, (images, names) in pairs.items():
        keep = [i for i, name in enumerate(names) if clip.fits(name)]
        images, names = images[keep], [names[i] for i in keep]
        scores[split] = retrieval(clip, images, names)
        scores[split]["too_long"] = len(pairs[split][1]) - len(keep)
        scores[split]["unseen_names"] = float(np.mean([bool(clip.unknown_words(n)) for n in names]))
    return scores


def main(argv: list[str] | None = None) -> None:
    from ..card import data_credit, write_clip_card

    p = argparse.ArgumentParser(prog="python -m diffusion.text", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a dataset with sprite names (meta.json)")
    p.add_argument("--out", type=Path, help="folder for the trained SpriteCLIP")
    p.add_argument(
        "--extra-data",
        action="append",
        default=[],
        metavar="DIR",
        help="more named sprites to learn from (repeatable); larger sprites are shrunk to --data's "
        "side, names come from meta.json 'names' or else its file 'paths'",
    )
    p.add_argument(
        "--paraphrase", action="store_true", help="also say each name the ways paraphrases() does"
    )
    p.add_argument(
        "--measure",
        type=Path,
        metavar="CLIP",
        help="measure this trained SpriteCLIP on the same held-out pairs instead of training one",
    )
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--vocab", type=int, default=ClipConfig.vocab_size)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if (args.out is None) == (args.measure is None):
        p.error("give --out (to train a SpriteCLIP) or --measure (to measure one), not both")
    train, held = _named_split(args.data)
    side = train.resolution
    extra = {Path(source).name: _named_split(source, side) for source in args.extra_data}
    if args.measure:
        clip = SpriteCLIP.from_pretrained(args.measure)
        scores = measure(clip, held, train)
        scores |= {f"held_out {k}": measure(clip, h)["held_out"] for k, (_, h) in extra.items()}
        print(json.dumps(scores, indent=2))
        return
    start = time.time()
    config = ClipConfig(vocab_size=args.vocab, resolution=side)
    parts = [train, *(t for t, _ in extra.values())]
    clip = train_clip(
        np.concatenate([t.images for t in parts]),
        [name for t in parts for name in t.names],
        alt_images=np.concatenate(
            [t.images if t.alt_images is None else t.alt_images for t in parts]
        ),
        config=config,
        epochs=args.epochs,
        seed=args.seed,
        log=lambda epoch, loss: epoch % 10 or print(f"epoch {epoch}: loss {loss:.3f}", flush=True),
        paraphrase=args.paraphrase,
    )
    minutes = (time.time() - start) / 60
    scores = measure(clip, held, train)
    scores |= {f"held_out {k}": measure(clip, h)["held_out"] for k, (_, h) in extra.items()}
    print(json.dumps(scores, indent=2))
    credits = [data_credit(source) for source in [args.data, *args.extra_data]]
    training = {
        "data": {"source": train.source, "pairs": len(train), "split": "train"},
        "extra_data": [
            {"source": t.source, "pairs": len(t), "split": "train"} for t, _ in extra.values()
        ],
        "recipe": {
            "epochs": args.epochs, "batch_size": 256, "lr": 2e-3, "seed": args.seed,
            "vocab": args.vocab, "paraphrase": args.paraphrase,
        },
        "train_minutes": round(minutes, 1),
        "parameters": sum(p.numel() for p in clip.parameters()),
        "credit": "\n\n".join(c for c in credits if c) or None,
    }  # fmt: skip
    clip.save_pretrained(args.out, {"training": training, "retrieval": scores})
    write_clip_card(args.out)
