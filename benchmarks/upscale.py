"""How well the 2x upscaler restores held-out tiles, against nearest and bicubic enlargement.

    python -m benchmarks.upscale [--model weights/upscale2x] [--data ../shared/data/dcss32]
        [--n 256] [--seed 0] [--picture docs/upscale.png --sprites ../shared/data/dawnlike16]

Takes ``--n`` tiles of the evaluator's held-out split (never seen in training), halves each
both ways the upscaler was trained on (``diffusion.train.halve``: the 2x2 average, and one
pixel of each 2x2 block), and enlarges the halves back with nearest-neighbour, bicubic
(Pillow) and the upscaler at its defaults. Against the original tiles, composited on white:
PSNR (dB), the share of pixels that come back exactly, and the colours per tile (the
original's own figure beside it). PSNR rewards the average of what could be there, which is
blur; a diffusion upscaler draws one sharp guess instead, so the table also says how much each
set of enlarged tiles looks like real ones: KID in the evaluator's classifier features and KID
of 3x3 pixel patterns (see docs/evaluation.md), both against the training split's tiles, with
the held-out originals as the floor. ``--picture`` writes a sheet: rows of held-out tiles
(halved, nearest, bicubic, upscaler, original) and, from ``--sprites``, native 16x16 sprites
of another set with their upscaled versions, which show the style the upscaler learned.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from diffusion import SpritePipeline, render
from diffusion.autoencoder import psnr
from diffusion.data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, load_dataset
from diffusion.device import configure_cpu_threads
from diffusion.evaluate import kernel_inception_distance, load_or_train_classifier
from diffusion.evaluate.driver import pattern_scale_of
from diffusion.evaluate.metrics import colours_per_sprite, pixel_patterns
from diffusion.train import halve


def bicubic(images: np.ndarray, factor: int = 2) -> np.ndarray:
    """RGBA sprites enlarged by Pillow's bicubic filter, the alpha hardened again."""
    out = [
        np.asarray(Image.fromarray(im).resize((im.shape[1] * factor,) * 2, Image.BICUBIC))
        for im in images
    ]
    return render.harden_alpha(np.stack(out))


def nearest(images: np.ndarray, factor: int = 2) -> np.ndarray:
    return images.repeat(factor, 1).repeat(factor, 2)


class Likeness:
    """KID of sprites against the training split, in classifier and in pixel-pattern space."""

    def __init__(self, data_path: str) -> None:
        data = load_dataset(data_path)
        train = data.split(EVAL_HOLDOUT, EVAL_SPLIT_SEED)[0]
        self.classifier, _ = load_or_train_classifier(data)
        self.scale = pattern_scale_of(train.images)
        self.features = self.classifier.embed(train.images)[0]
        self.patterns = pixel_patterns(train.images) * self.scale

    def __call__(self, rgb: np.ndarray) -> tuple[float, float]:
        kid = kernel_inception_distance(self.classifier.embed(rgb)[0], self.features)[0]
        patterns = pixel_patterns(rgb) * self.scale
        return kid, kernel_inception_distance(patterns, self.patterns)[0]


def figures(out: np.ndarray, real: np.ndarray, likeness: Likeness) -> dict[str, float]:
    a, b = render.composite(out), render.composite(real)
    kid, pattern_kid = likeness(a)
    return {
        "psnr": psnr(a, b),
        "exact": float((a == b).all(-1).mean()),
        "colours": float(colours_per_sprite(a).mean()),
        "kid": kid,
        "pattern_kid": pattern_kid,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="weights/upscale2x")
    parser.add_argument("--data", default="../shared/data/dcss32")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", help="write a sheet of examples here (PNG)")
    parser.add_argument("--sprites", help="a 16x16 set whose sprites the sheet also upscales")
    args = parser.parse_args(argv)
    configure_cpu_threads()
    pipe = SpritePipeline.from_pretrained(args.model)
    held = load_dataset(args.data).split(EVAL_HOLDOUT, EVAL_SPLIT_SEED)[1]
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(held), min(args.n, len(held)), replace=False))
    real = render.harden_alpha(np.concatenate([held.images, held.alpha[..., None]], -1)[pick])
    x = render.to_tensor(render.model_pixels(real, 4))
    options = pipe.options(len(real))
    likeness = Likeness(args.data)
    kid, pattern_kid = likeness(render.composite(real))
    print(
        f"{len(real)} held-out tiles of {args.data} · {options.sampler} {options.steps} steps "
        f"· seed {args.seed} · the originals: "
        f"{colours_per_sprite(render.composite(real)).mean():.1f} colours, KID {kid:.3f}, "
        f"pattern KID {pattern_kid:.3f}"
    )
    print(
        "| halved by | enlarged by | PSNR (dB) | exact pixels | colours per tile | KID "
        "| pattern KID | s per tile |"
    )
    print("|---|---|---|---|---|---|---|---|")
    sheet = []
    for how in ("average", "pick"):
        small = render.model_output(render.to_uint8(halve(x, how)))
        results = {}
        for name, enlarge in (
            ("nearest", nearest),
            ("bicubic", bicubic),
            ("upscaler", lambda s: pipe.upscale(s, seed=args.seed)),
        ):
            start = time.perf_counter()
            results[name] = enlarge(small)
            seconds = (time.perf_counter() - start) / len(small)
            f = figures(results[name], real, likeness)
            print(
                f"| {how} | {name} | {f['psnr']:.2f} | {100 * f['exact']:.1f}% | "
                f"{f['colours']:.1f} | {f['kid']:.3f} | {f['pattern_kid']:.3f} | {seconds:.4f} |"
            )
        rows = [nearest(small), results["nearest"], results["bicubic"], results["upscaler"], real]
        sheet.append(np.concatenate([r[:8] for r in rows]))
    if args.picture:
        if args.sprites:
            native = load_dataset(args.sprites)
            rgba = np.concatenate([native.images, native.alpha[..., None]], -1)
            chosen = render.harden_alpha(rgba[rng.choice(len(rgba), 8, replace=False)])
            sheet.append(np.concatenate([nearest(chosen), pipe.upscale(chosen, seed=args.seed)]))
        pictures = render.composite(np.concatenate(sheet))
        print(render.save_png(render.grid(pictures, scale=3, cols=8), args.picture))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
