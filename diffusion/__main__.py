"""Command line: ``python -m diffusion sample --label hero --steps 25 --gif hero.gif``.

A thin caller of the public API, like the app: load a pipeline, stream the frames, render them.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import render
from .pipeline import SpritePipeline
from .samplers import SAMPLERS


def _sample(args: argparse.Namespace) -> None:
    pipe = SpritePipeline.from_pretrained(args.model)
    context = None if args.label in (None, "none") else args.label
    if context is not None and context.isdigit():
        context = int(context)
    start = time.perf_counter()
    frames = []
    for frame in pipe.stream(
        context,
        n=args.n,
        sampler=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        eta=args.eta,
        spacing=args.spacing,
        palette=args.palette,
        prompt=args.prompt,
        guide=args.guide,
    ):
        frames.append(frame)
        print(f"\rstep {frame.step}/{frame.total}", end="", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    print(f"\r{frames[-1].total} steps in {elapsed:.2f} s, seed {frames[-1].seed}", file=sys.stderr)
    if args.png:
        print(render.save_png(render.grid(frames[-1].x, scale=args.scale), args.png))
    if args.gif:
        pictures = [render.grid(getattr(f, args.show), scale=args.scale) for f in frames]
        print(render.save_gif(pictures, args.gif, frame_ms=args.frame_ms, hold_ms=args.hold_ms))


def _palette(text: str) -> render.Palette:
    try:
        return render.parse_palette(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffusion", description="Sprite Diffusion")
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("sample", help="draw sprites, save a PNG sheet and a denoising GIF")
    s.add_argument("--model", default=None, help="model folder or Hub repo (default: shipped)")
    s.add_argument("--label", default=None, help="label name or index; 'none' = unconditional")
    s.add_argument("--sampler", default=None, choices=list(SAMPLERS))
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--guidance", type=float, default=None)
    s.add_argument("--eta", type=float, default=None)
    s.add_argument("--spacing", default=None, choices=["uniform", "karras"])
    s.add_argument(
        "--palette",
        type=_palette,
        default=None,
        help="output stage: 'data' snaps to the model's training palette, K keeps at most K "
        "colours per sprite; default raw",
    )
    s.add_argument("--prompt", help='describe the sprite, e.g. "red potion" (a text model only)')
    s.add_argument(
        "--guide", default="both", choices=["both", "label", "text"], help="what guidance follows"
    )
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--png", help="write the final sprite sheet here")
    s.add_argument("--gif", help="write the denoising animation here")
    s.add_argument("--show", choices=["x", "x0"], default="x", help="GIF shows noisy state or x0")
    s.add_argument("--scale", type=int, default=8, help="nearest-neighbour enlargement")
    s.add_argument("--frame-ms", type=int, default=80)
    s.add_argument("--hold-ms", type=int, default=1500)
    args = parser.parse_args(argv)
    try:
        _sample(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
