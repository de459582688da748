"""Draw the pictures of docs/game.md with the shipped model weights/sprites16.

    python docs/game_pictures.py

game-sheet.png: eight heroes on DawnBringer 16 with a black outline, the sheet enlarged 4x;
game-palettes.png: four creatures under six palette stages; game-tiles.png: four terrain tiles
drawn plain and four drawn tileable, each laid 3x3. Clear pixels show as a checkerboard.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from diffusion import SpritePipeline, render

DOCS = Path(__file__).resolve().parent


def main() -> None:
    pipe = SpritePipeline.from_pretrained()
    heroes = pipe.generate("hero", n=8, seed=3, palette="db16", outline="#000000")
    with tempfile.TemporaryDirectory() as folder:
        sheet = render.save_sheet(heroes, Path(folder) / "heroes.png", columns=8, scale=4)
        with Image.open(sheet) as image:
            render.checkerboard(image, 8).save(DOCS / "game-sheet.png")
    stages = [(None, False), ("data", False), ("db16", False), ("pico8", False),
              ("gameboy", False), (4, True)]  # fmt: skip
    rows = [
        pipe.generate("creature", n=4, seed=7, palette=p, palette_lock=lock) for p, lock in stages
    ]
    grid = render.grid(np.concatenate(rows), scale=4, cols=4, gap=2)
    render.checkerboard(grid, 8).save(DOCS / "game-palettes.png")
    plain = pipe.generate("terrain", n=4, seed=0, palette="data")
    tiles = pipe.generate("terrain", n=4, seed=0, palette="data", tileable=True)
    laid = render.grid(render.tile(np.concatenate([plain, tiles]), 3), scale=3, cols=4, gap=4)
    render.checkerboard(laid, 8).save(DOCS / "game-tiles.png")


if __name__ == "__main__":
    main()
