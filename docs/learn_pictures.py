"""The pictures of docs/learn.md, made by the Guidance and 2D tabs' own handlers with a shipped
model.

python -m docs.learn_pictures [--model weights/sprites16] [--out docs]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from diffusion import SpritePipeline
from ui.guidance import GuidanceTab
from ui.storage import OutputStore
from ui.studio import Studio
from ui.toy import ToyTab

SAMPLERS = ["ddpm", "ddim", "heun", "dpmpp_2m"]


def save(picture: Image.Image, out: Path) -> None:
    """A plot in at most 256 colours: a quarter of the bytes, no visible change."""
    picture.convert("RGB").quantize(256).save(out)


def side_by_side(paths: list[str], out: Path) -> None:
    pictures = [Image.open(p).convert("RGB") for p in paths]
    sheet = Image.new(
        "RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)), "white"
    )
    x = 0
    for picture in pictures:
        sheet.paste(picture, (x, 0))
        x += picture.width
    save(sheet, out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="weights/sprites16")
    p.add_argument("--out", default="docs")
    args = p.parse_args()
    out = Path(args.out)
    pipe = SpritePipeline.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio({"model": pipe}, OutputStore(tmp))
        shown = GuidanceTab(studio).show("model", "creature", 4.0, 10, 3)
        side_by_side([shown["x0"], shown["eps"]], out / "learn-guidance.png")
        toy = ToyTab(studio)
        for steps, name in [(10, "learn-2d.png"), (3, "learn-2d-3-steps.png")]:
            drawn = toy.explore("model", None, "ring", SAMPLERS, steps, 400, 40, 0)
            save(Image.open(drawn["picture"]), out / name)
        shutil.copy(drawn["animation"], out / "learn-forward.gif")
        sprite = pipe.generate("creature", n=1, seed=5)
        drawn = toy.explore("model", sprite, "sprite", ["ddpm", "dpmpp_2m"], 20, 1000, 20, 0)
        save(Image.open(drawn["picture"]), out / "learn-2d-sprite.png")
    print(f"wrote {out}/learn-*.png and learn-forward.gif")


if __name__ == "__main__":
    main()
