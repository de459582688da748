"""How seamless are tiles: the colour jump across a tile's wrap-around edges, tileable or not.

    python -m benchmarks.seams [--model weights/sprites16] [--label terrain] [--n 64] [--seed 0]

Draws ``--n`` sprites of ``--label`` twice from the same seed, once plain and once with
``tileable=True`` (circular padding in the U-Net), with the model's own sampler, steps and
palette stage. For each tile, ``diffusion.render.seams`` gives the mean colour jump (per RGB
channel, 0 to 255) between the pixels that meet when the tile is laid beside itself (last column
to first, last row to first) and between neighbouring pixels inside it. A seamless tile's wrap
jump is no larger than its interior one; the table gives both with their standard errors over
the tiles, their ratio, the share of tiles whose wrap jump is at most their interior one, and
the mean jump at the roughest of the 15 boundaries inside the tiles (column k to k + 1, or row
k to k + 1, averaged over the tiles), against which the wrap-around boundary is the 16th.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from diffusion import SpritePipeline, render
from diffusion.device import configure_cpu_threads


def measure(images: np.ndarray) -> dict[str, float]:
    """Per-tile seams of ``images``, summarised: means, standard errors, ratio, share seamless."""
    pairs = [render.seams(tile[None]) for tile in images]
    wrap, interior = (np.array(v) for v in zip(*pairs, strict=True))
    n = len(images)
    return {
        "wrap": float(wrap.mean()),
        "wrap_se": float(wrap.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        "interior": float(interior.mean()),
        "interior_se": float(interior.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        "ratio": float(wrap.mean() / interior.mean()),
        "seamless": float(np.mean(wrap <= interior)),
        "roughest": roughest_boundary(images),
    }


def roughest_boundary(images: np.ndarray) -> float:
    """The largest mean jump at one interior column or row boundary, over all tiles."""
    x = render.composite(images).astype(np.float64)
    across = np.abs(np.diff(x, axis=2)).mean(axis=(0, 1, 3))
    down = np.abs(np.diff(x, axis=1)).mean(axis=(0, 2, 3))
    return float(max(across.max(), down.max()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="weights/sprites16")
    parser.add_argument("--label", default="terrain")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure_cpu_threads()
    pipe = SpritePipeline.from_pretrained(args.model)
    options = pipe.options(args.n, palette=pipe.defaults.get("palette"))
    print(
        f"{args.n} x {args.label} · {options.sampler} · {options.steps} steps · guidance "
        f"{options.guidance:g} · palette {render.palette_name(options.palette)} · seed {args.seed}"
    )
    print(
        "| sampling | wrap jump | interior jump | wrap / interior | tiles wrap <= interior "
        "| roughest interior boundary |"
    )
    print("|---|---|---|---|---|---|")
    for tileable in (False, True):
        start = time.perf_counter()
        images = pipe.generate(
            args.label, n=args.n, seed=args.seed, palette=options.palette, tileable=tileable
        )
        m = measure(images)
        print(
            f"| {'tileable' if tileable else 'plain'} | {m['wrap']:.1f} ± {m['wrap_se']:.1f} | "
            f"{m['interior']:.1f} ± {m['interior_se']:.1f} | {m['ratio']:.2f} | "
            f"{100 * m['seamless']:.0f}% | {m['roughest']:.1f} | "
            f"({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
