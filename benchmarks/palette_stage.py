"""How much a palette colour must earn: the evaluator's figures for the "data" palette stage at
several colour costs (``render.PALETTE_COLOUR_COST``), on the same samples.

    python -m benchmarks.palette_stage --data ../shared/data/dawnlike16
        [--model weights/sprites16] [--costs 0,0.02,0.05,0.1,0.2] [--n 100] [--seeds 0,1,2]
        [--sampler NAME --steps N]

Each seed's sprites are drawn once (at the model's defaults unless ``--sampler``/``--steps``),
then every colour cost snaps them to the training palette and the evaluator measures the result
(composited on white), beside the raw output. Cost 0 keeps every palette colour any pixel is
nearest to: the pixel-by-pixel snap.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from diffusion import SpritePipeline, render
from diffusion.data import load_dataset
from diffusion.evaluate import evaluate


class _Replay:
    """The pipeline, with each sample drawn once and then passed through a chosen stage."""

    def __init__(self, pipe: SpritePipeline) -> None:
        self.pipe, self.drawn, self.stage = pipe, {}, lambda x: x

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def generate(self, context: str, n: int, seed: int, **options: Any) -> np.ndarray:
        key = (context, n, seed, tuple(sorted(options.items())))
        if key not in self.drawn:
            self.drawn[key] = self.pipe.generate(context, n=n, seed=seed, **options)
        return self.stage(self.drawn[key])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.palette_stage", description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="weights/sprites16")
    parser.add_argument("--costs", default="0,0.02,0.05,0.1,0.2")
    parser.add_argument("--n", type=int, default=100, help="sprites per label")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sampler", help="default: the model's")
    parser.add_argument("--steps", type=int, help="default: the model's for the sampler")
    args = parser.parse_args(argv)
    pipe = SpritePipeline.from_pretrained(args.model)
    if pipe.palette is None:
        parser.error(f"{args.model} has no training palette")
    data = load_dataset(args.data)
    replay = _Replay(pipe)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{'stage':>10} {'critic':>7} {'AUC':>6} {'pattern KID':>12} {'pattern FD':>11} "
          f"{'Frechet':>8} {'colours':>8}")  # fmt: skip
    stages = [("raw", None)] + [(f"cost {c}", float(c)) for c in args.costs.split(",")]
    for name, cost in stages:
        replay.stage = (
            (lambda x: x)
            if cost is None
            else (lambda x, c=cost: render.apply_palette(x, "data", pipe.palette, colour_cost=c))
        )
        report = evaluate(
            replay, data, n_per_label=args.n, seed=seeds, sampler=args.sampler, steps=args.steps
        )
        figure = {k: report[k]["generated"] for k in (
            "c2st_accuracy", "c2st_auc", "kid_patterns", "frechet_distance_patterns",
            "frechet_distance",
        )}  # fmt: skip
        colours = report["crispness"]["colours_per_sprite"]["generated"]
        print(f"{name:>10} {figure['c2st_accuracy']:>7.3f} {figure['c2st_auc']:>6.3f} "
              f"{figure['kid_patterns']:>12.3f} {figure['frechet_distance_patterns']:>11.3f} "
              f"{figure['frechet_distance']:>8.3f} {colours:>8.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
