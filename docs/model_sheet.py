"""A model's sheet for the docs: one row per label, label i drawn with seed i, at the model's
defaults (sampler, steps, guidance, palette stage), transparent sprites on a checkerboard.

python -m docs.model_sheet [--model weights/sprites16] [--out docs/sprites16-rgba.png]
"""

from __future__ import annotations

import argparse

import numpy as np

from diffusion import SpritePipeline, render
from diffusion.options import guidance_floor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="weights/sprites16")
    p.add_argument("--out", default="docs/sprites16-rgba.png")
    p.add_argument("--n", type=int, default=8, help="sprites per label")
    args = p.parse_args()
    pipe = SpritePipeline.from_pretrained(args.model)
    palette = pipe.defaults.get("palette")
    rows = [
        pipe.generate(label, n=args.n, seed=i, palette=palette)
        for i, label in enumerate(pipe.labels)
    ]
    sheet = render.grid(np.concatenate(rows), scale=4, cols=args.n)
    render.save_png(render.checkerboard(sheet) if pipe.rgba else sheet, args.out)
    d = pipe.defaults
    floor = guidance_floor(d["guidance_sigma_min"], "sigma")
    print(
        f"{args.out}: {args.model}, {d['sampler']} {pipe.default_steps(d['sampler'])} steps, "
        f"guidance {d['guidance']:g}{floor}, palette stage {render.palette_name(palette)}"
    )


if __name__ == "__main__":
    main()
