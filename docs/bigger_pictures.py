"""Draw the pictures of docs/bigger.md: 32x32 sheets of a pixel and a latent model beside real
tiles, and the autoencoder's reconstructions of held-out tiles.

    python docs/bigger_pictures.py --pixel weights/tiles32 --latent runs/tiles32-latent \
        --data ../shared/data/dcss32

tiles32-models.png: per label (hero, creature, food, weapon_spell, item, terrain) a row of 8
held-out real tiles, then 8 tiles of the pixel model and 8 of the latent model (label i drawn
with seed i, each model at its defaults); tiles32-vae.png: 16 held-out tiles above what the
latent model's autoencoder makes of them. On white, enlarged 3x.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diffusion import SpritePipeline, render
from diffusion.autoencoder import reconstruct
from diffusion.data import EVAL_HOLDOUT, EVAL_SPLIT_SEED, load_dataset

DOCS = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pixel", required=True, help="the pixel-space 32x32 model folder")
    p.add_argument("--latent", required=True, help="the latent 32x32 model folder")
    p.add_argument("--data", default="../shared/data/dcss32")
    args = p.parse_args(argv)
    held = load_dataset(args.data).split(EVAL_HOLDOUT, EVAL_SPLIT_SEED)[1]
    real = render.harden_alpha(np.concatenate([held.images, held.alpha[..., None]], -1))
    pixel, latent = (SpritePipeline.from_pretrained(m) for m in (args.pixel, args.latent))
    rows = []
    for i, label in enumerate(pixel.labels):
        rows.append(real[held.labels == i][:8])
        rows += [pipe.generate(label, n=8, seed=i) for pipe in (pixel, latent)]
    render.save_png(
        render.grid(render.composite(np.concatenate(rows)), scale=3, cols=8, gap=2),
        DOCS / "tiles32-models.png",
    )
    rng = np.random.default_rng(0)
    chosen = real[np.sort(rng.choice(len(real), 16, replace=False))]
    x = render.to_tensor(render.model_pixels(chosen, 4))
    decoded = render.model_output(render.to_uint8(reconstruct(latent.autoencoder, x)))
    render.save_png(
        render.grid(render.composite(np.concatenate([chosen, decoded])), scale=3, cols=16),
        DOCS / "tiles32-vae.png",
    )


if __name__ == "__main__":
    main()
