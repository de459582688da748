"""The README's prompt grid: one row of sprites per prompt, drawn with a text model's defaults.

python -m docs.prompt_grid [--model weights/sprites16-text] [--out docs/prompts.png] [--no-label]
"""

from __future__ import annotations

import argparse

import numpy as np

from diffusion import SpritePipeline, render

PROMPTS = [
    ("red potion", "food"),
    ("blue potion", "food"),
    ("skeleton warrior", "hero"),
    ("fire ant", "creature"),
    ("golden sword", "weapon_spell"),
    ("dark snowy oak", "terrain"),
    ("brick wall", "terrain"),
    ("green slime", "creature"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="weights/sprites16-text")
    p.add_argument("--out", default="docs/prompts.png")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--no-label", action="store_true", help="the prompts alone, under no label")
    args = p.parse_args()
    pipe = SpritePipeline.from_pretrained(args.model)
    palette = pipe.defaults.get("palette")
    rows = [
        pipe.generate(
            None if args.no_label else label, n=args.n, prompt=prompt, seed=i, palette=palette
        )
        for i, (prompt, label) in enumerate(PROMPTS)
    ]
    render.save_png(render.grid(np.concatenate(rows), scale=4, cols=args.n), args.out)
    rows_said = (f"{p!r} ({'no label' if args.no_label else label})" for p, label in PROMPTS)
    print(args.out, "rows:", ", ".join(rows_said))


if __name__ == "__main__":
    main()
