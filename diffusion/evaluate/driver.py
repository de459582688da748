"""Generate with a pipeline and measure the samples against the data: one report per palette stage.

Every seed draws its own real reference sets and samples; the report holds the mean over seeds
of every figure, each seed's headline figures, and for the distances and the two-sample test a
standard error and a 95% interval (see :func:`evaluate_palettes`), so that :func:`compare` can
say whether one setting beats another beyond the noise of the estimates.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffusion import render
from diffusion.data import SpriteDataset
from diffusion.evaluate.classifier import (
    HOLDOUT,
    SPLIT_SEED,
    SpriteClassifier,
    load_or_train_classifier,
)
from diffusion.evaluate.metrics import (
    BOOTSTRAP_RESAMPLES,
    C2ST_FOLDS,
    COLOUR_TOLERANCE,
    COPY_MAX_SHARE,
    COPY_TOLERANCE,
    FLAT_TOLERANCE,
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    PATTERN_DIM,
    TWO_SAMPLE_FIGURES,
    TwoSampleResult,
    balanced_indices,
    colours_per_sprite,
    copies_beyond_real,
    flat_pair_share,
    frechet_distance,
    kid_from_kernels,
    near_copies,
    normal_interval,
    opaque_share,
    palette_distance,
    pixel_patterns,
    polynomial_kernel,
    stratified_resample,
    stray_opaque_share,
    two_sample_test,
)
from diffusion.evaluate.prompts import TEXT_OPTIONS

# The figures that carry an uncertainty, each a distance from the real held-out sprites or how
# well a critic tells generated sprites from them: lower is better for all of them.
UNCERTAIN = (
    "frechet_distance",
    "kid",
    "frechet_distance_patterns",
    "kid_patterns",
    "c2st_accuracy",
    "c2st_auc",
)
_DISTANCES = UNCERTAIN[:4]  # bootstrapped over sprites; the critic's figures vary over folds
_CRITIC = UNCERTAIN[4:]


@dataclass
class _Side:
    """Sprites measured against the held-out ones, in one feature space: their features, their
    labels and KID's kernel among them and with every held-out sprite."""

    feats: np.ndarray
    labels: np.ndarray
    kernel: np.ndarray
    kernel_held: np.ndarray

    @classmethod
    def of(cls, feats: np.ndarray, labels: np.ndarray, held_feats: np.ndarray) -> _Side:
        kernel_held = polynomial_kernel(feats, held_feats)
        return cls(feats, labels, polynomial_kernel(feats, feats), kernel_held)


@dataclass
class _Space:
    """One feature space (classifier penultimate or pixel patterns) of the real sprites."""

    held: np.ndarray  # every held-out sprite
    held_labels: np.ndarray
    k_held: np.ndarray  # KID's kernel among them
    train: _Side  # the distinct training sprites of the seed's training reference

    @classmethod
    def of(
        cls,
        held: SpriteDataset,
        held_feats: np.ndarray,
        train_feats: np.ndarray,
        train_labels: np.ndarray,
    ) -> _Space:
        held_kernel = polynomial_kernel(held_feats, held_feats)
        train = _Side.of(train_feats, train_labels, held_feats)
        return cls(held_feats, held.labels, held_kernel, train)


@dataclass
class _RealSide:
    """The real sprites' half of every metric for one seed: the same for every palette stage."""

    seed: int
    held_idx: np.ndarray  # the reference: n per label from the held-out split, into held
    train_pos: np.ndarray  # the training reference, into the distinct rows of _Space.train
    spaces: dict[str, _Space]
    ref_resamples: np.ndarray  # (B, len(held_idx)) bootstrap resamples of reference positions
    floor: dict[str, float]  # each distance for the training reference
    floor_replicates: dict[str, np.ndarray]  # ... and its bootstrap replicates
    c2st_held: np.ndarray  # distinct held-out sprites, min(n, available) per label
    c2st_counts: np.ndarray  # how many per label
    c2st_floor: TwoSampleResult  # the critic's fold figures, training vs held-out sprites
    acc: np.ndarray
    copies: np.ndarray
    palette: np.ndarray
    colours: np.ndarray
    flat: np.ndarray
    palette_distance: np.ndarray


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
    # A model of transparency hands out RGBA; its figures compare it composited on white.
    expected = (n, data.resolution, data.resolution, 4 if getattr(pipe, "rgba", False) else 3)
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
    sampler: str | None = None,
    steps: int | None = None,
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
    passes the samples through the palette stage first. See the package docstring for the metrics.
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
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | Sequence[int] = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate` for several palette stages on the same samples, keyed by palette name
    ("raw", "data" or the colour count).

    The figures in :data:`UNCERTAIN` come with ``se`` (standard error) and ``ci95`` (95%
    interval: plus or minus 1.96 standard errors) for each of their numbers. For the distances
    the standard error comes from a bootstrap over sprites: each seed's generated and reference
    sets are resampled within labels (:data:`~diffusion.evaluate.metrics.BOOTSTRAP_RESAMPLES`
    times), the distances recomputed, and the spread of the replicates' mean over seeds is the
    standard error of the reported mean. For the critic's accuracy and AUC, every fold of every
    seed is one measurement.
    """
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
    if hasattr(pipe, "options"):  # unset choices are the model's own defaults
        chosen = pipe.options(sampler=sampler, steps=steps)
        sampler, steps = chosen.sampler, chosen.steps
    options: dict[str, Any] = {"sampler": sampler, "steps": steps}
    if guidance is not None:
        options["guidance"] = guidance
    seeds = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    if not seeds:
        raise ValueError("give at least one evaluation seed")
    pattern_scale = pattern_scale_of(train.images)
    reports: dict[str, list[dict[str, Any]]] = {render.palette_name(p): [] for p in palettes}
    for s in seeds:
        start = time.perf_counter()
        raw = _generate(pipe, data, n_per_label, s, options)
        generate_seconds = time.perf_counter() - start
        start = time.perf_counter()
        real = _real_side(data, train, held, classifier, pattern_scale, n_per_label, s)
        real_seconds = time.perf_counter() - start
        for palette in palettes:
            start = time.perf_counter()
            generated = render.apply_palette(raw, palette, data_colours)
            report = _measure(
                render.composite(generated, "white"),
                data, real, classifier, pattern_scale, n_per_label,
            )  # fmt: skip
            if generated.shape[-1] == 4 and held.alpha is not None:
                report["alpha"] = _alpha_figures(generated[..., 3], held, n_per_label)
            report["seconds"] = {
                "classifier": classifier_seconds,
                "generate": generate_seconds,
                "real": real_seconds,
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
        "guidance_sigma_min": getattr(pipe, "defaults", {}).get("guidance_sigma_min", 0.0),
        "classifier": str(classifier_path),
        "bf16": bool(getattr(pipe, "bf16", False)),
    }
    merged = {
        name: {**common, "palette": name, **_mean_over_seeds(runs)}
        for name, runs in reports.items()
    }
    for report in merged.values():
        _flag_memorised(report, n_per_label * len(seeds), held.counts())
    return merged


def _flag_memorised(report: dict[str, Any], n_generated: int, held_counts: dict[str, int]) -> None:
    """Name the labels whose near-copy rate is above the held-out sprites' beyond noise
    (:func:`~diffusion.evaluate.metrics.copies_beyond_real`): a lower critic or distance earned
    by copying training sprites is not a better model."""
    memorised = [
        name
        for name, r in report["per_label"].items()
        if copies_beyond_real(
            (r["near_copy_generated"], n_generated), (r["near_copy_real"], held_counts[name])
        )
    ]
    report["near_copy_rate"]["memorised"] = memorised


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
    held-out names; chance 1 / candidates). Options that need a prompt (guidance_text,
    negative_prompt, rerank) apply to the prompted sprites only.
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
    plain = {k: v for k, v in options.items() if k not in TEXT_OPTIONS}
    sides = {
        "generated": pipe.generate(context, n=len(idx), prompt=names, seed=seed, **options),
        "label_only": pipe.generate(context, n=len(idx), seed=seed, **plain),
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


def pattern_scale_of(train_images: np.ndarray) -> float:
    """The factor that gives the training split's pattern histograms a mean square of 1 per
    dimension: KID's kernel ``(x . y / d + 1)^3`` is only cubic, rather than nearly linear, when
    ``x . y / d`` is of order 1, as it is for the Inception features it was made for."""
    patterns = pixel_patterns(train_images)
    return float(np.sqrt(PATTERN_DIM / np.square(patterns).sum(1).mean()))


def _distances(
    spaces: dict[str, _Space],
    sides: dict[str, _Side],
    rows: np.ndarray,
    held_rows: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Each distance of :data:`_DISTANCES` between the rows ``rows`` of a side and the held-out
    sprites ``held_rows`` (indices may repeat: a draw with replacement, a bootstrap resample)."""
    out: dict[str, float] = {}
    for name, suffix in (("classifier", ""), ("patterns", "_patterns")):
        space, side = spaces[name], sides[name]
        out[f"frechet_distance{suffix}"] = frechet_distance(side.feats[rows], space.held[held_rows])
        out[f"kid{suffix}"], _ = kid_from_kernels(
            side.kernel,
            space.k_held,
            side.kernel_held,
            rows,
            held_rows,
            # Both samples are drawn n per label: KID must weigh pairs of labels as such.
            strata_x=side.labels,
            strata_y=space.held_labels,
            subsets=KID_SUBSETS,
            subset_size=KID_SUBSET_SIZE,
            rng=rng,
        )
    return out


def _distinct_per_label(
    labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """``counts[j]`` distinct indices of label j for each label, label by label."""
    return np.concatenate(
        [rng.choice(np.flatnonzero(labels == j), c, replace=False) for j, c in enumerate(counts)]
    )


def _real_side(
    data: SpriteDataset,
    train: SpriteDataset,
    held: SpriteDataset,
    classifier: SpriteClassifier,
    pattern_scale: float,
    n_per_label: int,
    seed: int,
) -> _RealSide:
    k = data.num_labels
    rng = np.random.default_rng(seed)
    held_idx = balanced_indices(held.labels, n_per_label, k, rng)
    train_idx = balanced_indices(train.labels, n_per_label, k, rng)
    # Labels with fewer sprites than n are drawn with replacement: the kernels are taken over
    # distinct sprites, and KID leaves out the pairs of copies (see mmd2_unbiased).
    train_distinct, train_pos = np.unique(train_idx, return_inverse=True)
    held_feats, held_pred = classifier.embed(held.images)
    train_feats, _ = classifier.embed(train.images[train_distinct])
    train_labels = train.labels[train_distinct]
    spaces = {
        "classifier": _Space.of(held, held_feats, train_feats, train_labels),
        "patterns": _Space.of(
            held,
            pixel_patterns(held.images) * pattern_scale,
            pixel_patterns(train.images[train_distinct]) * pattern_scale,
            train_labels,
        ),
    }
    labels = held.labels[held_idx]
    boot = np.random.default_rng([seed, 1])
    ref_resamples = np.stack(
        [stratified_resample(labels, boot) for _ in range(BOOTSTRAP_RESAMPLES)]
    )
    sides = {name: space.train for name, space in spaces.items()}
    floor = _distances(spaces, sides, train_pos, held_idx, boot)
    replicates = [
        _distances(spaces, sides, train_pos[stratified_resample(labels, boot)], held_idx[ref], boot)
        for ref in ref_resamples
    ]
    # The critic needs distinct sprites: a copy on both sides of a fold would be learnt by heart.
    c2st_counts = np.minimum(n_per_label, np.bincount(held.labels, minlength=k))
    c2st_held = _distinct_per_label(held.labels, c2st_counts, rng)
    c2st_train = _distinct_per_label(train.labels, c2st_counts, rng)
    c2st_floor = two_sample_test(
        train.images[c2st_train],
        held.images[c2st_held],
        labels=np.repeat(np.arange(k), c2st_counts),
        seed=seed,
    )
    palette = render.data_palette(train.images)
    held_ref = held.images[held_idx]
    copy_real = near_copies(held.images, _with_frames(train))
    return _RealSide(
        seed=seed,
        held_idx=held_idx,
        train_pos=train_pos,
        spaces=spaces,
        ref_resamples=ref_resamples,
        floor=floor,
        floor_replicates={m: np.array([r[m] for r in replicates]) for m in _DISTANCES},
        c2st_held=held.images[c2st_held],
        c2st_counts=c2st_counts,
        c2st_floor=c2st_floor,
        acc=_per_label_mean((held_pred == held.labels).astype(float), held.labels, k),
        copies=_per_label_mean(copy_real.astype(float), held.labels, k),
        palette=palette,
        colours=colours_per_sprite(held_ref),
        flat=flat_pair_share(held_ref),
        palette_distance=palette_distance(held_ref, palette),
    )


def _alpha_figures(alpha: np.ndarray, held: SpriteDataset, n_per_label: int) -> dict[str, Any]:
    """A model of transparency against the held-out sprites' alpha: the opaque share per label
    and the lone opaque specks (:func:`~.metrics.stray_opaque_share`)."""
    k = held.num_labels
    labels = np.repeat(np.arange(k), n_per_label)
    gen_share = _per_label_mean(opaque_share(alpha), labels, k)
    real_share = _per_label_mean(opaque_share(held.alpha), held.labels, k)
    return {
        "opaque_share": {
            "generated": dict(zip(held.label_names, gen_share.tolist(), strict=True)),
            "real_heldout": dict(zip(held.label_names, real_share.tolist(), strict=True)),
            "max_difference": float(np.abs(gen_share - real_share).max()),
        },
        "stray_opaque": {
            "generated": float(stray_opaque_share(alpha).mean()),
            "real_heldout": float(stray_opaque_share(held.alpha).mean()),
        },
    }


def _measure(
    generated: np.ndarray,
    data: SpriteDataset,
    real: _RealSide,
    classifier: SpriteClassifier,
    pattern_scale: float,
    n_per_label: int,
) -> dict[str, Any]:
    """Every metric of one seed's samples against ``real`` (from :func:`_real_side`)."""
    k = data.num_labels
    gen_labels = np.repeat(np.arange(k), n_per_label)
    gen_feats, gen_pred = classifier.embed(generated)
    acc_gen = _per_label_mean((gen_pred == gen_labels).astype(float), gen_labels, k)
    acc_real, copies_real = real.acc, real.copies
    copy_gen = near_copies(generated, _with_frames(data))
    copies_gen = _per_label_mean(copy_gen.astype(float), gen_labels, k)

    gen_patterns = pixel_patterns(generated) * pattern_scale
    sides = {
        "classifier": _Side.of(gen_feats, gen_labels, real.spaces["classifier"].held),
        "patterns": _Side.of(gen_patterns, gen_labels, real.spaces["patterns"].held),
    }
    rows = np.arange(len(generated))
    boot = np.random.default_rng([real.seed, 2])
    dist = _distances(real.spaces, sides, rows, real.held_idx, boot)
    # The generated resamples meet the same reference resamples as the floor's, so that each
    # replicate of a ratio divides two distances to one resampled reference.
    replicates = [
        _distances(
            real.spaces,
            sides,
            stratified_resample(gen_labels, boot),
            real.held_idx[ref],
            boot,
        )
        for ref in real.ref_resamples
    ]
    gen_replicates = {m: np.array([r[m] for r in replicates]) for m in _DISTANCES}

    first = np.concatenate([j * n_per_label + np.arange(c) for j, c in enumerate(real.c2st_counts)])
    c2st_labels = np.repeat(np.arange(k), real.c2st_counts)
    c2st_gen = two_sample_test(generated[first], real.c2st_held, labels=c2st_labels, seed=real.seed)
    # Each label's share of sprites, generated and held-out alike, the critic calls right.
    critic = _per_label_mean(c2st_gen.correct.astype(float), np.tile(c2st_labels, 2), k)

    def distance(metric: str, with_ratio: bool) -> dict[str, Any]:
        block = {"generated": dist[metric], "real_floor": real.floor[metric]}
        if with_ratio:
            block["ratio"] = _ratio(dist[metric], real.floor[metric])
        return block

    fd_gen, fd_floor = dist["frechet_distance"], real.floor["frechet_distance"]
    return {
        "seed": real.seed,
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
        "kid": {**distance("kid", False), "subset_size": KID_SUBSET_SIZE},
        "frechet_distance_patterns": distance("frechet_distance_patterns", True),
        "kid_patterns": {**distance("kid_patterns", False), "subset_size": KID_SUBSET_SIZE},
        **{
            f"c2st_{figure}": {
                "generated": float(getattr(c2st_gen, figure).mean()),
                "real_floor": float(getattr(real.c2st_floor, figure).mean()),
                "chance": 0.5,
                "folds": C2ST_FOLDS,
                "per_side": int(real.c2st_counts.sum()),
            }
            for figure in TWO_SAMPLE_FIGURES
        },
        "near_copy_rate": {
            "generated": float(copies_gen.mean()),
            "real_heldout": float(copies_real.mean()),
            "tolerance": COPY_TOLERANCE,
            "max_share": COPY_MAX_SHARE,
        },
        "crispness": {
            "colours_per_sprite": _ratio_block(
                colours_per_sprite(generated), real.colours, tolerance=COLOUR_TOLERANCE
            ),
            "flat_pairs": _ratio_block(
                flat_pair_share(generated), real.flat, tolerance=FLAT_TOLERANCE
            ),
            "palette_distance": _ratio_block(
                palette_distance(generated, real.palette),
                real.palette_distance,
                palette_size=len(real.palette),
            ),
        },
        "per_label": {
            name: {
                "accuracy_generated": float(acc_gen[i]),
                "accuracy_real": float(acc_real[i]),
                "near_copy_generated": float(copies_gen[i]),
                "near_copy_real": float(copies_real[i]),
                "critic_accuracy": float(critic[i]),
            }
            for i, name in enumerate(data.label_names)
        },
        # Raw material of the uncertainties, consumed by _mean_over_seeds.
        "_replicates": {
            m: {"generated": gen_replicates[m], "real_floor": real.floor_replicates[m]}
            for m in _DISTANCES
        },
        "_folds": {
            f"c2st_{figure}": {
                "generated": getattr(c2st_gen, figure),
                "real_floor": getattr(real.c2st_floor, figure),
            }
            for figure in TWO_SAMPLE_FIGURES
        },
    }


def _ratio_block(generated: np.ndarray, real: np.ndarray, **extra: Any) -> dict[str, Any]:
    g, r = float(np.mean(generated)), float(np.mean(real))
    return {"generated": g, "real_heldout": r, "ratio": _ratio(g, r), **extra}


def _mean_over_seeds(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report whose numbers are the means of ``reports`` (one per seed), the headline
    figures of each seed, so that a reader sees how much they move, and the uncertainties."""

    def mean(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            return {key: mean([v[key] for v in values]) for key in first}
        if isinstance(first, float) or (isinstance(first, int) and not isinstance(first, bool)):
            present = [v for v in values if v is not None]
            return float(np.mean(present)) if len(present) == len(values) else None
        return first

    merged = mean([{k: v for k, v in r.items() if k != "seed" and k[0] != "_"} for r in reports])
    seeds = [r["seed"] for r in reports]
    merged["seed"] = seeds[0] if len(seeds) == 1 else seeds
    for metric in _DISTANCES:
        block = merged[metric]
        seed_reps = [r["_replicates"][metric] for r in reports]
        reps = {fig: np.mean([s[fig] for s in seed_reps], 0) for fig in seed_reps[0]}
        if "ratio" in block and block["ratio"] is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = [s["generated"] / s["real_floor"] for s in seed_reps]
            reps["ratio"] = np.mean(ratios, 0)
        _attach_uncertainty(block, reps, nonnegative=metric.startswith("frechet"))
    for metric in _CRITIC:
        block = merged[metric]
        block["se"], block["ci95"] = {}, {}
        for fig in ("generated", "real_floor"):
            folds = np.concatenate([r["_folds"][metric][fig] for r in reports])
            se = float(folds.std(ddof=1) / np.sqrt(len(folds)))
            block["se"][fig] = se
            block["ci95"][fig] = list(normal_interval(block[fig], se))
    merged["per_seed"] = {
        str(r["seed"]): {
            "frechet_ratio": r["frechet_distance"]["ratio"],
            "label_accuracy": r["label_accuracy"]["generated"],
            "colours_ratio": r["crispness"]["colours_per_sprite"]["ratio"],
            "flat_pairs_ratio": r["crispness"]["flat_pairs"]["ratio"],
            "kid": r["kid"]["generated"],
            "frechet_patterns_ratio": r["frechet_distance_patterns"]["ratio"],
            "kid_patterns": r["kid_patterns"]["generated"],
            "c2st_accuracy": r["c2st_accuracy"]["generated"],
            "c2st_auc": r["c2st_auc"]["generated"],
        }
        for r in reports
    }
    return merged


def _attach_uncertainty(
    block: dict[str, Any], replicates: dict[str, np.ndarray], nonnegative: bool
) -> None:
    """Add ``se`` and ``ci95`` for each figure of ``block`` that has bootstrap replicates."""
    block["se"], block["ci95"] = {}, {}
    for fig, reps in replicates.items():
        if not np.isfinite(reps).all():
            block["se"][fig], block["ci95"][fig] = None, None
            continue
        se = float(np.std(reps, ddof=1))
        low, high = normal_interval(block[fig], se)
        block["se"][fig] = se
        block["ci95"][fig] = [max(low, 0.0) if nonnegative else low, high]


def check_comparable(report_a: dict[str, Any], report_b: dict[str, Any]) -> None:
    """A ValueError unless the two reports measured the same data at the same count per label:
    only then do their figures and uncertainties speak of the same thing."""
    for key in ("data", "n_per_label"):
        if report_a.get(key) != report_b.get(key):
            raise ValueError(
                f"reports differ in {key}: {report_a.get(key)!r} vs {report_b.get(key)!r}"
            )


def compare(
    report_a: dict[str, Any],
    report_b: dict[str, Any],
    metric: str = "c2st_accuracy",
    figure: str = "generated",
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Whether the setting of ``report_a`` beats that of ``report_b`` on ``metric`` (one of
    :data:`UNCERTAIN`, where lower is better), beyond the noise of the two estimates.

    A two-sided z-test on the difference, with the reports' standard errors taken as
    independent. Reports of the same data and seeds share their real reference sets, which
    makes the errors of their distances positively correlated: the test is then conservative.
    Returns the figures, their difference ``a - b``, its standard error, ``z`` and ``better``:
    "a", "b" or None when the difference is within the noise at ``confidence``, or when the
    side that scores better memorises a label the other does not (``memorised``: each report's
    labels whose near copies exceed the held-out sprites' beyond noise): copies of training
    sprites flatter every figure here.
    """
    if metric not in UNCERTAIN:
        raise ValueError(f"compare needs a metric with an uncertainty: one of {UNCERTAIN}")
    check_comparable(report_a, report_b)
    a, b = report_a[metric][figure], report_b[metric][figure]
    se_a, se_b = report_a[metric]["se"][figure], report_b[metric]["se"][figure]
    if a is None or b is None or se_a is None or se_b is None:
        raise ValueError(f"{metric} {figure} has no value or standard error in both reports")
    se = float(np.hypot(se_a, se_b))
    z = (a - b) / se if se > 0 else float(np.sign(a - b)) * np.inf
    critical = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    better = "a" if z < -critical else "b" if z > critical else None
    memorised = {
        side: report.get("near_copy_rate", {}).get("memorised", [])
        for side, report in (("a", report_a), ("b", report_b))
    }
    if better and set(memorised[better]) - set(memorised["b" if better == "a" else "a"]):
        better = None
    return {
        "metric": metric,
        "figure": figure,
        "a": a,
        "b": b,
        "difference": a - b,
        "se": se,
        "z": float(z),
        "confidence": confidence,
        "better": better,
        "memorised": memorised,
    }


def _default_guidance(pipe: Any) -> float | None:
    return getattr(pipe, "defaults", {}).get("guidance")


def _ratio(a: float, b: float) -> float | None:
    # None (JSON null) rather than inf/nan, which are not valid JSON.
    return float(a / b) if b > 0 else None
