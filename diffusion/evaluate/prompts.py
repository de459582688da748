"""Prompts that name a class, drawn without a label: does the text alone steer the model?

:data:`CLASS_PROMPTS` holds, for each label of dawnlike16, one- and two-word prompts whose every
word occurs in that label's training names (and almost only there: "potion" is in 38 food names
and no other label's). :func:`evaluate_prompts` draws sprites from each prompt with no label and
reports the share the evaluator's classifier assigns to the label the prompt names; a model whose
text steers on its own scores well above chance (1 / labels), and the same seeds without a
prompt show what the model draws unguided.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from diffusion import render
from diffusion.data import SpriteDataset
from diffusion.evaluate.classifier import load_or_train_classifier

CLASS_PROMPTS: dict[str, tuple[str, ...]] = {
    "hero": ("orc", "dwarf", "rogue", "skeleton warrior"),
    "creature": ("golem", "horse", "naga", "worm"),
    "food": ("potion", "red potion", "meat", "mushroom"),
    "weapon_spell": ("wand", "burst", "beam", "sword"),
    "item": ("ring", "scroll", "gem", "tome"),
    "terrain": ("brick wall", "floor", "oak", "grass"),
}
TARGET_SHARE = 0.75  # what a text model that steers on its own should reach
# The options that only mean something with a prompt: not passed to the run without one.
TEXT_OPTIONS = ("guidance_text", "negative_prompt", "rerank")


def evaluate_prompts(
    pipe: Any,
    data: SpriteDataset,
    *,
    prompts: Mapping[str, Sequence[str]] | None = None,
    per_prompt: int = 8,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    no_prompt: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Draw ``per_prompt`` sprites from each prompt of ``prompts`` ({label: prompts}; default
    :data:`CLASS_PROMPTS`) with no label, and measure how often the evaluator's classifier
    finds the label the prompt names.

    Returns ``share`` (over all sprites, each label weighing as much), ``labels`` (per label),
    ``prompts`` (per prompt), ``no_prompt_share`` (the same seeds with no prompt, scored
    against the same labels; None with ``no_prompt=False``, which skips that run), ``chance``
    and ``target``. With the pipeline's SpriteCLIP also ``clip_score`` (the mean cosine of
    sprite and prompt) and ``own_of_P``: how often a sprite's own prompt is the nearest of all
    P prompts (chance 1 / P). ``options`` go to
    ``pipe.generate`` (sampler, steps, guidance, guidance_text, rerank, ...);
    ``seconds_per_sprite`` is the time of drawing the prompted sprites.
    """
    if not getattr(pipe, "supports_text", False):
        raise ValueError("this model takes no prompts: evaluate_prompts needs a text model")
    prompts = dict(CLASS_PROMPTS if prompts is None else prompts)
    unknown = sorted(set(prompts) - set(data.label_names))
    if unknown or not prompts:
        raise ValueError(
            f"prompts must name labels of the data ({data.label_names}); got {unknown or 'none'}"
        )
    if per_prompt < 1:
        raise ValueError(f"per_prompt must be at least 1, got {per_prompt}")
    classifier, _ = load_or_train_classifier(data, cache_dir)
    plain = {k: v for k, v in options.items() if k not in TEXT_OPTIONS}
    listed = [(label, p) for label, texts in prompts.items() for p in texts]
    shown, unprompted, targets = [], [], []
    seconds = 0.0
    for i, (label, texts) in enumerate(prompts.items()):
        # One batch per label, each label with its own seed, so labels share no start noise.
        names = [p for p in texts for _ in range(per_prompt)]
        label_seed = seed * len(data.label_names) + i
        start = time.perf_counter()
        shown.append(pipe.generate(None, n=len(names), prompt=names, seed=label_seed, **options))
        seconds += time.perf_counter() - start
        if no_prompt:
            unprompted.append(pipe.generate(None, n=len(names), seed=label_seed, **plain))
        targets += [data.label_names.index(label)] * len(names)
    images = render.composite(np.concatenate(shown), "white")
    targets = np.array(targets)
    _, predicted = classifier.embed(images)
    hit = predicted == targets
    per_label = {
        label: float(hit[targets == data.label_names.index(label)].mean()) for label in prompts
    }
    report: dict[str, Any] = {
        "share": float(np.mean(list(per_label.values()))),
        "no_prompt_share": None,
        "chance": 1 / data.num_labels,
        "target": TARGET_SHARE,
        "labels": per_label,
        "prompts": {
            p: float(hit[j * per_prompt : (j + 1) * per_prompt].mean())
            for j, (_, p) in enumerate(listed)
        },
        "per_prompt": per_prompt,
        "seed": seed,
        "seconds_per_sprite": seconds / len(targets),
        "options": {k: v for k, v in options.items() if v is not None},
    }
    if no_prompt:
        _, plain_labels = classifier.embed(render.composite(np.concatenate(unprompted), "white"))
        hit_plain = plain_labels == targets
        report["no_prompt_share"] = float(
            np.mean([hit_plain[targets == data.label_names.index(k)].mean() for k in prompts])
        )
    clip = getattr(pipe, "text_encoder", None)
    if clip is not None:
        texts = [p for _, p in listed]
        with torch.no_grad():
            similarity = (clip.encode_image(images) @ clip.encode_text(texts).T).cpu().numpy()
        own = np.repeat(np.arange(len(texts)), per_prompt)
        report["clip_score"] = float(similarity[np.arange(len(own)), own].mean())
        report[f"own_of_{len(texts)}"] = float((similarity.argmax(1) == own).mean())
    return report


def format_prompt_report(report: dict[str, Any]) -> str:
    """A few plain-text lines of an :func:`evaluate_prompts` report."""
    count = len(report["prompts"])
    plain = report["no_prompt_share"]
    plain = "" if plain is None else f"no prompt {plain:.3f}, "
    lines = [
        f"prompts without a label: {count} prompts naming a class, {report['per_prompt']} "
        f"sprites each; the classifier finds the named label in {report['share']:.3f} "
        f"({plain}chance {report['chance']:.3f}, "
        f"target {report['target']:.2f})",
        "  " + " / ".join(f"{label} {share:.2f}" for label, share in report["labels"].items()),
    ]
    if f"own_of_{count}" in report:
        lines.append(
            f"  SpriteCLIP: score {report['clip_score']:.3f}, own prompt nearest of {count} "
            f"{report[f'own_of_{count}']:.3f} (chance {1 / count:.3f})"
        )
    return "\n".join(lines)
