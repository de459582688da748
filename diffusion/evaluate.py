"""Measure a trained sprite model: label accuracy, Frechet distance and near-copy rate.

Usage: ``python -m diffusion.evaluate MODEL --data DIR [--n 100] [--sampler dpmpp_2m] ...``

All three metrics use a small CNN sprite classifier trained on the stratified train split of the
data (``data.split(holdout=0.2, seed=0)``) and cached on disk, keyed by the data's content:

* **label accuracy**: the share of generated sprites that the classifier assigns to the label
  they were conditioned on. The reference is the classifier's balanced accuracy (mean of the
  per-label accuracies) on the real held-out split, because the generated set is balanced too;
  the ratio says how recognisable the generated sprites are compared with real unseen ones.
* **Frechet distance** between Gaussians fitted to the classifier's penultimate features
  (the FID recipe with a sprite classifier in place of Inception). Generated sprites (n per label)
  are compared with a reference set of held-out sprites drawn n per label (with replacement for
  labels that have fewer than n), so both sides have the same size and label mix even though the
  data is very unbalanced. The floor is the same distance for n-per-label training sprites against
  the same reference: what a model that reproduced its training set would score, including the
  small-sample bias of the estimate. The ratio generated / floor is then comparable across runs.
* **near-copy rate**: a sprite is a near copy when, against some data sprite or its mirror
  image, at most ``COPY_MAX_SHARE`` (5%) of its pixels differ by more than ``COPY_TOLERANCE``
  (32 of 255) in any channel. Pixel art has few pixels, so counting changed pixels separates
  copies from redraws better than a mean difference, and the tolerance ignores the faint colour
  noise of generated pixels. Generated sprites are checked against every sprite of the data and
  its second animation frames (a model may have been trained on all of them); the reference is
  the rate for real held-out sprites against the train split (and its frames), which is not
  zero: the data keeps recolours and autotile variants. Both rates are averaged per label.

* **crispness**, for generated and real held-out sprites side by side, and their ratio:
  distinct colours per sprite (colours closer than ``COLOUR_TOLERANCE`` merged, most frequent
  first), the share of flat neighbour pairs (horizontal and vertical neighbours within
  ``FLAT_TOLERANCE`` in every channel), and the mean distance (RGB, 0..255) of a pixel to the
  nearest colour of the training split's palette. Pixel art has few flat colours; a speckled
  model has many near-identical ones.

Every figure can be the mean over several evaluation seeds (``--seeds 0,1,2``, the default of
the command line): the Frechet estimate moves by about 0.2 with the seed. ``--palette`` measures
the output with the palette stage (``render.apply_palette``) as well, on the same samples.

A model trained on all of the data has seen the held-out sprites, which flatters its Frechet
distance; ``python -m diffusion.train --split train`` keeps them unseen.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from diffusion import render
from diffusion.data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, SpriteDataset, load_dataset

__all__ = [
    "COPY_MAX_SHARE",
    "COPY_TOLERANCE",
    "SpriteClassifier",
    "balanced_indices",
    "colours_per_sprite",
    "evaluate",
    "evaluate_palettes",
    "flat_pair_share",
    "format_report",
    "frechet_distance",
    "load_or_train_classifier",
    "main",
    "near_copies",
    "palette_distance",
    "train_classifier",
]

COPY_TOLERANCE = 32
COPY_MAX_SHARE = 0.05
COLOUR_TOLERANCE = 12
FLAT_TOLERANCE = 6
HOLDOUT = EVAL_HOLDOUT
SPLIT_SEED = EVAL_SPLIT_SEED
DEFAULT_CACHE = Path.home() / ".cache" / "sprite-diffusion"
# Part of the cache key: bump it whenever the classifier or its training changes.
CLASSIFIER_VERSION = 1
WIDTHS = (32, 64, 128)
EPOCHS = 12
BATCH = 64
LR = 3e-3


class SpriteClassifier(nn.Module):
    """A small CNN over uint8 sprites of any size; ``features`` is its penultimate layer."""

    def __init__(self, num_labels: int, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, width in enumerate(widths):
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                cin = width
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        # Global pooling makes the network independent of the sprite resolution.
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_labels)

    @staticmethod
    def prepare(images: np.ndarray) -> Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
        return render.to_tensor(images)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def embed(self, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features (N, D) float64 and predicted label indices (N,) of uint8 sprites."""
        self.eval()
        feats, preds = [], []
        for start in range(0, len(images), batch):
            f = self.features(self.prepare(images[start : start + batch]))
            feats.append(f.double().numpy())
            preds.append(self.head(f).argmax(1).numpy())
        return np.concatenate(feats), np.concatenate(preds)


def train_classifier(
    train: SpriteDataset, *, epochs: int = EPOCHS, seed: int = 0
) -> SpriteClassifier:
    """Train a :class:`SpriteClassifier` with random horizontal flips.

    The loss weighs labels by inverse frequency: the evaluation sets are label-balanced, and an
    unweighted classifier would lean towards the majority label (terrain is 57% of dawnlike16).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # weight initialisation
    model = SpriteClassifier(train.num_labels)
    x = SpriteClassifier.prepare(train.images)
    y = torch.from_numpy(train.labels)
    counts = torch.bincount(y, minlength=train.num_labels).clamp(min=1)
    weights = len(y) / (train.num_labels * counts.float())
    steps_per_epoch = math.ceil(len(x) / BATCH)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=epochs * steps_per_epoch
    )
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(model(xb), y[idx], weight=weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def _cache_key(data: SpriteDataset) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps([CLASSIFIER_VERSION, WIDTHS, EPOCHS, BATCH, LR, HOLDOUT, SPLIT_SEED]).encode()
    )
    h.update(json.dumps(data.label_names).encode())
    h.update(str(data.images.shape).encode())
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(np.ascontiguousarray(data.labels).tobytes())
    return h.hexdigest()[:16]


def load_or_train_classifier(
    data: SpriteDataset, cache_dir: str | os.PathLike | None = None
) -> tuple[SpriteClassifier, Path]:
    """The classifier for ``data`` (trained on its train split), from the cache or trained now.

    Returns the classifier and its cache file. The file name holds a hash of the data content, so
    a changed dataset never reuses a stale classifier.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE
    path = cache / f"classifier-{data.resolution}px-{_cache_key(data)}.safetensors"
    model = SpriteClassifier(data.num_labels)
    if path.is_file():
        model.load_state_dict(load_file(path))
        return model.eval(), path
    train, _ = data.split(HOLDOUT, SPLIT_SEED)
    model = train_classifier(train)
    cache.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name first so that an interrupted run leaves no broken cache file.
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    metadata = {"label_names": json.dumps(data.label_names), "source": data.source}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp, metadata)
    tmp.replace(path)
    return model, path


def frechet_distance(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``x`` (n, d) and ``y`` (m, d).

    ``|mu_x - mu_y|^2 + tr(S_x) + tr(S_y) - 2 tr((S_x^1/2 S_y S_x^1/2)^1/2)``, in float64. The
    cross term uses symmetric matrices only, so ``eigh`` applies and no scipy ``sqrtm`` is needed.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(
            f"need two (n >= 2, d) feature sets, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    mu_x, mu_y = x.mean(0), y.mean(0)
    # reshape: torch.cov returns a 0-d tensor for one feature.
    cov_x, cov_y = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    root_x = _psd_sqrt(cov_x)
    cross = torch.linalg.eigvalsh(root_x @ cov_y @ root_x).clamp(min=0).sqrt().sum()
    fd = (mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * cross
    # Rounding can leave a tiny negative value for identical sets.
    return max(float(fd), 0.0)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def near_copies(
    images: np.ndarray,
    reference: np.ndarray,
    *,
    tolerance: int = COPY_TOLERANCE,
    max_share: float = COPY_MAX_SHARE,
) -> np.ndarray:
    """Which sprites are near copies of a reference sprite or of its mirror image.

    A pixel differs when some channel is off by more than ``tolerance``; a sprite is a near copy
    when at most ``max_share`` of its pixels differ from one reference. Returns (N,) bool.
    """
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"sprite shapes differ: {images.shape[1:]} vs {reference.shape[1:]}")
    pixels = images.shape[1] * images.shape[2]
    max_differing = math.floor(max_share * pixels)
    imgs = torch.from_numpy(np.ascontiguousarray(images).reshape(len(images), pixels, 3))
    refs = np.concatenate([reference, reference[:, :, ::-1]]).reshape(-1, pixels, 3)
    refs = torch.from_numpy(refs)
    # Exact pruning: a near copy has at most max_differing pixels off by <= 255 per channel and
    # the rest off by <= tolerance, which caps its squared distance. float64 keeps the squared
    # distances of integer pixels exact. Only the few pairs under the cap get the pixel count.
    cap = 3 * (max_differing * 255**2 + (pixels - max_differing) * tolerance**2)
    flat_refs = refs.reshape(len(refs), -1).double()
    ref_sq = flat_refs.square().sum(1)
    found = torch.zeros(len(images), dtype=torch.bool)
    for start in range(0, len(images), 256):
        x = imgs[start : start + 256].reshape(-1, pixels * 3).double()
        dist = x.square().sum(1, keepdim=True) + ref_sq - 2 * x @ flat_refs.T
        for pairs in torch.nonzero(dist <= cap).split(8192):
            i, j = pairs.T
            diff = (imgs[start + i].short() - refs[j].short()).abs().amax(-1) > tolerance
            hits = (diff.sum(-1) <= max_differing).nonzero().squeeze(1)
            found[start + i[hits]] = True
    return found.numpy()


def colours_per_sprite(images: np.ndarray, tolerance: int = COLOUR_TOLERANCE) -> np.ndarray:
    """Distinct colours of each (H, W, 3) uint8 sprite once colours within ``tolerance`` (in
    every channel) are merged: most frequent first, a colour counts when no counted one is near.
    """
    counts = np.empty(len(images), dtype=np.int64)
    for i, sprite in enumerate(images):
        colours, freq = np.unique(sprite.reshape(-1, 3), axis=0, return_counts=True)
        kept: list[np.ndarray] = []
        for colour in colours[np.argsort(-freq, kind="stable")].astype(np.int16):
            if not any(np.abs(colour - k).max() <= tolerance for k in kept):
                kept.append(colour)
        counts[i] = len(kept)
    return counts


def flat_pair_share(images: np.ndarray, tolerance: int = FLAT_TOLERANCE) -> np.ndarray:
    """Per sprite, the share of horizontal and vertical neighbour pairs of (almost) one colour."""
    x = np.asarray(images, dtype=np.int16)
    across = np.abs(x[:, :, 1:] - x[:, :, :-1]).max(-1) <= tolerance
    down = np.abs(x[:, 1:] - x[:, :-1]).max(-1) <= tolerance
    return (across.sum((1, 2)) + down.sum((1, 2))) / (across[0].size + down[0].size)


def palette_distance(images: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Per sprite, the mean RGB distance (0..255 units) of a pixel to its nearest palette colour."""
    images = np.asarray(images)
    colours, inverse = np.unique(images.reshape(-1, 3), axis=0, return_inverse=True)
    palette = np.asarray(palette, np.float64)
    nearest = np.concatenate(
        [
            np.sqrt(((chunk[:, None] - palette[None]) ** 2).sum(-1)).min(1)
            for chunk in np.array_split(colours.astype(np.float64), len(colours) // 1024 + 1)
        ]
    )
    return nearest[inverse.reshape(-1)].reshape(len(images), -1).mean(1)


def balanced_indices(
    labels: np.ndarray, n_per_label: int, num_labels: int, rng: np.random.Generator
) -> np.ndarray:
    """n indices per label (without replacement when the label has enough, else with)."""
    picked = []
    for label in range(num_labels):
        idx = np.flatnonzero(labels == label)
        if len(idx) == 0:
            raise ValueError(f"label {label} has no examples to draw a reference set from")
        picked.append(rng.choice(idx, n_per_label, replace=len(idx) < n_per_label))
    return np.concatenate(picked)


def _with_frames(data: SpriteDataset) -> np.ndarray:
    """The sprites plus those second animation frames that differ from them."""
    if data.alt_images is None:
        return data.images
    animated = (data.alt_images != data.images).any(axis=(1, 2, 3))
    return np.concatenate([data.images, data.alt_images[animated]])


def _per_label_mean(values: np.ndarray, labels: np.ndarray, num_labels: int) -> np.ndarray:
    return np.array([values[labels == k].mean() for k in range(num_labels)])


def _generate(
    pipe: Any, data: SpriteDataset, n: int, seed: int, options: dict[str, Any]
) -> np.ndarray:
    expected = (n, data.resolution, data.resolution, 3)
    batches = []
    for label, name in enumerate(data.label_names):
        # A distinct seed per label, so that labels do not share their starting noise.
        label_seed = seed * data.num_labels + label
        images = np.asarray(pipe.generate(context=name, n=n, seed=label_seed, **options))
        if images.dtype != np.uint8 or images.shape != expected:
            raise ValueError(
                f"pipe.generate returned {images.dtype} {images.shape}, expected uint8 {expected}"
            )
        batches.append(images)
    return np.concatenate(batches)


def evaluate(
    pipe: Any,
    data: SpriteDataset,
    *,
    n_per_label: int = 100,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance: float | None = None,
    seed: int | Sequence[int] = 0,
    palette: render.Palette = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Generate ``n_per_label`` sprites per label with ``pipe`` and measure them against ``data``.

    ``pipe`` needs ``labels``, ``resolution`` and ``generate(context=, n=, sampler=, steps=,
    guidance=, seed=)`` (a :class:`diffusion.SpritePipeline`); ``guidance=None`` keeps the
    pipeline's default, which the report then names when the pipeline has ``defaults``.
    Several seeds give the mean of every figure (and ``per_seed`` headline figures); ``palette``
    passes the samples through the palette stage first. See the module docstring for the metrics.
    """
    return evaluate_palettes(
        pipe,
        data,
        [palette],
        n_per_label=n_per_label,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        seed=seed,
        cache_dir=cache_dir,
    )[render.palette_name(palette)]


def evaluate_palettes(
    pipe: Any,
    data: SpriteDataset,
    palettes: Sequence[render.Palette],
    *,
    n_per_label: int = 100,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    guidance: float | None = None,
    seed: int | Sequence[int] = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate` for several palette stages on the same samples, keyed by palette name
    ("raw", "data" or the colour count)."""
    if list(pipe.labels) != data.label_names:
        raise ValueError(
            f"model labels {list(pipe.labels)} differ from data labels {data.label_names}"
        )
    if pipe.resolution != data.resolution:
        raise ValueError(f"model makes {pipe.resolution}px sprites, data has {data.resolution}px")
    if n_per_label < 2:
        raise ValueError("n_per_label must be at least 2 for a covariance estimate")
    data_colours = getattr(pipe, "palette", None)
    for palette in palettes:
        render.check_palette(palette, data_colours)
    train, held = data.split(HOLDOUT, SPLIT_SEED)
    for name, count in held.counts().items():
        if count == 0:
            raise ValueError(f"label {name!r} has too few sprites to hold any out for reference")
    start = time.perf_counter()
    classifier, classifier_path = load_or_train_classifier(data, cache_dir)
    classifier_seconds = time.perf_counter() - start
    options: dict[str, Any] = {"sampler": sampler, "steps": steps}
    if guidance is not None:
        options["guidance"] = guidance
    seeds = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    if not seeds:
        raise ValueError("give at least one evaluation seed")
    reports: dict[str, list[dict[str, Any]]] = {render.palette_name(p): [] for p in palettes}
    for s in seeds:
        start = time.perf_counter()
        raw = _generate(pipe, data, n_per_label, s, options)
        generate_seconds = time.perf_counter() - start
        real = _real_side(data, train, held, classifier, n_per_label, s)
        for palette in palettes:
            start = time.perf_counter()
            generated = render.apply_palette(raw, palette, data_colours)
            report = _measure(generated, data, real, classifier, n_per_label, s)
            report["seconds"] = {
                "classifier": classifier_seconds,
                "generate": generate_seconds,
                "metrics": time.perf_counter() - start,
            }
            reports[render.palette_name(palette)].append(report)
    common = {
        "data": data.source,
        "resolution": data.resolution,
        "labels": data.label_names,
        "n_per_label": n_per_label,
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance if guidance is not None else _default_guidance(pipe),
        "classifier": str(classifier_path),
        "bf16": bool(getattr(pipe, "bf16", False)),
    }
    return {
        name: {**common, "palette": name, **_mean_over_seeds(runs)}
        for name, runs in reports.items()
    }


def evaluate_text(
    pipe: Any,
    data: SpriteDataset,
    *,
    prompts: int = 240,
    candidates: int = 20,
    seed: int = 0,
    palette: render.Palette = None,
    **options: Any,
) -> dict[str, Any]:
    """How well a text model's sprites match their prompts, by its own SpriteCLIP.

    Prompts are the names of ``prompts`` held-out sprites (never seen in training, drawn
    evenly over labels); each is drawn once with its label. Reported for the generated sprites,
    for the same seeds without the prompt (label only: what the label alone explains), and for
    the real held-out sprites: the mean CLIP score (cosine similarity of sprite and prompt) and
    how often the own prompt is the nearest of ``candidates`` (itself and random other
    held-out names; chance 1 / candidates).
    """
    if not getattr(pipe, "supports_text", False):
        raise ValueError("this model takes no prompts: evaluate_text needs a text model")
    if data.names is None:
        raise ValueError(f"{data.source} has no sprite names to use as prompts")
    _, held = data.split(HOLDOUT, SPLIT_SEED)
    rng = np.random.default_rng(seed)
    per_label = max(1, prompts // data.num_labels)
    idx = np.concatenate(
        [
            rng.permutation(np.flatnonzero(held.labels == k))[:per_label]
            for k in range(data.num_labels)
        ]
    )
    names = [held.names[i] for i in idx]
    context = np.eye(data.num_labels, dtype=np.float32)[held.labels[idx]]
    sides = {
        "generated": pipe.generate(context, n=len(idx), prompt=names, seed=seed, **options),
        "label_only": pipe.generate(context, n=len(idx), seed=seed, **options),
    }
    sides = {k: render.apply_palette(v, palette, pipe.palette) for k, v in sides.items()}
    sides["real"] = held.images[idx]
    clip = pipe.text_encoder
    # Rivals: other held-out names (an offset of 1..N-1 never lands on the own name).
    others = (idx[:, None] + rng.integers(1, len(held), (len(idx), candidates - 1))) % len(held)
    with torch.no_grad():
        text = clip.encode_text(names)
        all_text = clip.encode_text(held.names)
        report: dict[str, Any] = {
            "prompts": len(idx),
            "candidates": candidates,
            "seed": seed,
            "palette": render.palette_name(palette),
        }
        for side, images in sides.items():
            img = clip.encode_image(images)
            own = (img * text).sum(1)
            rival = torch.einsum("nd,nkd->nk", img, all_text[torch.as_tensor(others)])
            report[side] = {
                "clip_score": float(own.mean()),
                f"own_of_{candidates}": float((own[:, None] > rival).all(1).float().mean()),
            }
    report["chance"] = 1 / candidates
    report["examples"] = names[:: max(1, len(names) // 8)][:8]
    return report


def format_text_report(report: dict[str, Any]) -> str:
    k = report["candidates"]
    lines = [
        f"text: {report['prompts']} held-out names as prompts, SpriteCLIP score and own prompt "
        f"nearest of {k} (chance {report['chance']:.2f})",
        f"{'':12} {'clip score':>10} {'own of ' + str(k):>10}",
    ]
    for side in ("real", "generated", "label_only"):
        r = report[side]
        lines.append(f"{side:12} {r['clip_score']:10.3f} {r[f'own_of_{k}']:10.3f}")
    return "\n".join(lines)


def _ratio_block(generated: np.ndarray, real: np.ndarray, **extra: Any) -> dict[str, Any]:
    g, r = float(np.mean(generated)), float(np.mean(real))
    return {"generated": g, "real_heldout": r, "ratio": _ratio(g, r), **extra}


def _real_side(
    data: SpriteDataset,
    train: SpriteDataset,
    held: SpriteDataset,
    classifier: SpriteClassifier,
    n_per_label: int,
    seed: int,
) -> dict[str, Any]:
    """The real sprites' half of every metric for one seed: the same for every palette stage."""
    k = data.num_labels
    rng = np.random.default_rng(seed)
    held_ref = held.images[balanced_indices(held.labels, n_per_label, k, rng)]
    train_ref = train.images[balanced_indices(train.labels, n_per_label, k, rng)]
    _, held_pred = classifier.embed(held.images)
    ref_feats, _ = classifier.embed(held_ref)
    train_feats, _ = classifier.embed(train_ref)
    palette = render.data_palette(train.images)
    copy_real = near_copies(held.images, _with_frames(train))
    return {
        "ref_feats": ref_feats,
        "acc": _per_label_mean((held_pred == held.labels).astype(float), held.labels, k),
        "fd_floor": frechet_distance(train_feats, ref_feats),
        "copies": _per_label_mean(copy_real.astype(float), held.labels, k),
        "palette": palette,
        "colours": colours_per_sprite(held_ref),
        "flat": flat_pair_share(held_ref),
        "palette_distance": palette_distance(held_ref, palette),
    }


def _measure(
    generated: np.ndarray,
    data: SpriteDataset,
    real: dict[str, Any],
    classifier: SpriteClassifier,
    n_per_label: int,
    seed: int,
) -> dict[str, Any]:
    """Every metric of one seed's samples against ``real`` (from :func:`_real_side`)."""
    k = data.num_labels
    gen_labels = np.repeat(np.arange(k), n_per_label)
    gen_feats, gen_pred = classifier.embed(generated)
    acc_gen = _per_label_mean((gen_pred == gen_labels).astype(float), gen_labels, k)
    acc_real, fd_floor, copies_real = real["acc"], real["fd_floor"], real["copies"]
    fd_gen = frechet_distance(gen_feats, real["ref_feats"])
    copy_gen = near_copies(generated, _with_frames(data))
    copies_gen = _per_label_mean(copy_gen.astype(float), gen_labels, k)

    return {
        "seed": seed,
        "label_accuracy": {
            "generated": float(acc_gen.mean()),
            "real_heldout": float(acc_real.mean()),
            "ratio": _ratio(acc_gen.mean(), acc_real.mean()),
            "chance": 1.0 / k,
        },
        "frechet_distance": {
            "generated": fd_gen,
            "real_floor": fd_floor,
            "ratio": _ratio(fd_gen, fd_floor),
        },
        "near_copy_rate": {
            "generated": float(copies_gen.mean()),
            "real_heldout": float(copies_real.mean()),
            "tolerance": COPY_TOLERANCE,
            "max_share": COPY_MAX_SHARE,
        },
        "crispness": {
            "colours_per_sprite": _ratio_block(
                colours_per_sprite(generated), real["colours"], tolerance=COLOUR_TOLERANCE
            ),
            "flat_pairs": _ratio_block(
                flat_pair_share(generated), real["flat"], tolerance=FLAT_TOLERANCE
            ),
            "palette_distance": _ratio_block(
                palette_distance(generated, real["palette"]),
                real["palette_distance"],
                palette_size=len(real["palette"]),
            ),
        },
        "per_label": {
            name: {
                "accuracy_generated": float(acc_gen[i]),
                "accuracy_real": float(acc_real[i]),
                "near_copy_generated": float(copies_gen[i]),
                "near_copy_real": float(copies_real[i]),
            }
            for i, name in enumerate(data.label_names)
        },
    }


def _mean_over_seeds(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report whose numbers are the means of ``reports`` (one per seed), plus the headline
    figures of each seed, so that a reader sees how much they move."""

    def mean(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            return {key: mean([v[key] for v in values]) for key in first}
        if isinstance(first, float) or (isinstance(first, int) and not isinstance(first, bool)):
            present = [v for v in values if v is not None]
            return float(np.mean(present)) if len(present) == len(values) else None
        return first

    merged = mean([{k: v for k, v in r.items() if k != "seed"} for r in reports])
    seeds = [r["seed"] for r in reports]
    merged["seed"] = seeds[0] if len(seeds) == 1 else seeds
    merged["per_seed"] = {
        str(r["seed"]): {
            "frechet_ratio": r["frechet_distance"]["ratio"],
            "label_accuracy": r["label_accuracy"]["generated"],
            "colours_ratio": r["crispness"]["colours_per_sprite"]["ratio"],
            "flat_pairs_ratio": r["crispness"]["flat_pairs"]["ratio"],
        }
        for r in reports
    }
    return merged


def _default_guidance(pipe: Any) -> float | None:
    return getattr(pipe, "defaults", {}).get("guidance")


def _ratio(a: float, b: float) -> float | None:
    # None (JSON null) rather than inf/nan, which are not valid JSON.
    return float(a / b) if b > 0 else None


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of an :func:`evaluate` report."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def row(name: str, *values: float | None) -> str:
        return f"{name:<28}" + "".join(f"{num(v):>11}" for v in values)

    acc, fd, copies = report["label_accuracy"], report["frechet_distance"], report["near_copy_rate"]
    crisp = report["crispness"]
    guidance = "default" if report["guidance"] is None else report["guidance"]
    res = report["resolution"]
    seeds = report["seed"]
    seed_text = f"seed {seeds}" if isinstance(seeds, int) else f"mean of seeds {seeds}"
    lines = [
        f"data {report['data']} ({res}x{res}, {len(report['labels'])} labels)",
        (
            f"sampler {report['sampler']}, {report['steps']} steps, guidance {guidance}, "
            f"palette {report.get('palette', 'raw')}, {seed_text}, "
            f"{report['n_per_label']} per label"
        ),
        "",
        f"{'metric':<28}{'generated':>11}{'real':>11}{'ratio':>11}",
        row("label accuracy", acc["generated"], acc["real_heldout"], acc["ratio"]),
        row("Frechet distance", fd["generated"], fd["real_floor"], fd["ratio"]),
        row("near-copy rate", copies["generated"], copies["real_heldout"]),
        *(
            row(name, c["generated"], c["real_heldout"], c["ratio"])
            for name, c in (
                ("colours per sprite", crisp["colours_per_sprite"]),
                ("flat neighbour pairs", crisp["flat_pairs"]),
                ("distance to palette", crisp["palette_distance"]),
            )
        ),
        "",
        f"{'label':<28}{'acc gen':>11}{'acc real':>11}{'copy gen':>11}{'copy real':>11}",
    ]
    for name, r in report["per_label"].items():
        values = (r["accuracy_generated"], r["accuracy_real"])
        values += (r["near_copy_generated"], r["near_copy_real"])
        lines.append(row(name, *values))
    lines.append(
        f"(chance accuracy {num(acc['chance'])}; real accuracy is on the held-out split; "
        "the Frechet floor compares training with held-out sprites)"
    )
    if len(report.get("per_seed", {})) > 1:
        lines.append("per seed: Frechet ratio / colours ratio / flat-pairs ratio")
        for seed, figures in report["per_seed"].items():
            values = (figures["frechet_ratio"], figures["colours_ratio"])
            lines.append(
                f"  {seed}: " + " / ".join(num(v) for v in (*values, figures["flat_pairs_ratio"]))
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m diffusion.evaluate MODEL --data DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m diffusion.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", help="model folder or Hugging Face Hub id")
    parser.add_argument("--data", required=True, help="dataset folder or hf://datasets/OWNER/NAME")
    parser.add_argument("--n", type=int, default=100, help="generated sprites per label")
    parser.add_argument("--sampler", default="dpmpp_2m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's")
    parser.add_argument(
        "--seeds", default="0,1,2", help="evaluation seeds, comma-separated; figures are means"
    )
    parser.add_argument("--seed", type=int, help="a single evaluation seed (replaces --seeds)")
    parser.add_argument(
        "--palette",
        default="raw",
        help="palette stages to measure on the same samples, comma-separated: raw, data or a "
        "colour count (e.g. 'raw,data'); the JSON holds the first, and 'variants' all of them",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="also score prompts (a text model): SpriteCLIP agreement on held-out names",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="the network's precision (default: the model's sampling.precision)",
    )
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")
    parser.add_argument(
        "--cache", type=Path, help=f"classifier cache folder (default {DEFAULT_CACHE})"
    )
    args = parser.parse_args(argv)
    try:
        seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
        palettes = [render.parse_palette(p) for p in args.palette.split(",")]
    except ValueError as err:
        parser.error(f"--seeds and --palette: {err}")

    # Imported here so that the metrics above can be used without the pipeline module.
    from diffusion import SpritePipeline

    pipe = SpritePipeline.from_pretrained(args.model)
    if args.precision:
        pipe.defaults["precision"] = args.precision
    if args.sampler not in pipe.samplers:
        parser.error(f"unknown sampler {args.sampler!r}; choose from {list(pipe.samplers)}")
    reports = evaluate_palettes(
        pipe,
        load_dataset(args.data),
        palettes,
        n_per_label=args.n,
        sampler=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        seed=seeds,
        cache_dir=args.cache,
    )
    print(f"model {args.model}")
    for report in reports.values():
        report["model"] = args.model
        print(format_report(report) + "\n")
    if args.text:
        text = evaluate_text(
            pipe,
            load_dataset(args.data),
            seed=seeds[0],
            palette=palettes[0],
            sampler=args.sampler,
            steps=args.steps,
            **({"guidance": args.guidance} if args.guidance is not None else {}),
        )
        print(format_text_report(text))
        for report in reports.values():
            report["text"] = text
    if args.json is not None:
        first = next(iter(reports.values()))
        if len(reports) > 1:
            first = {**first, "variants": reports}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(first, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
