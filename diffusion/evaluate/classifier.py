"""The evaluator's feature extractor: a small CNN sprite classifier, its training and its cache.

It plays Inception's part in FID and KID: its penultimate, globally pooled layer describes what a
sprite shows, and its predictions give the label accuracy. It is trained on the stratified train
split of the data (``data.split(holdout=0.2, seed=0)``) and cached on disk, keyed by the data's
content.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from diffusion import render
from diffusion.data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, SpriteDataset

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
