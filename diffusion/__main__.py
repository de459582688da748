"""Command line: ``python -m diffusion sample --label hero`` (or ``sprite-diffusion sample ...``).

A thin caller of the public API, like the app: load a pipeline, stream the frames, render them.
The sheet and the denoising GIF go to ``--out`` (``out/`` by default, which git ignores) as
``<label>.png`` and ``<label>.gif``; ``--png`` / ``--gif`` name the files instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    stem = Path(args.out) / (args.label or "none")
    png, gif = Path(args.png or f"{stem}.png"), Path(args.gif or f"{stem}.gif")
    for path in (png, gif):
        path.parent.mkdir(parents=True, exist_ok=True)
    print(render.save_png(render.grid(frames[-1].x, scale=args.scale), png))
    pictures = [render.grid(getattr(f, args.show), scale=args.scale) for f in frames]
    print(render.save_gif(pictures, gif, frame_ms=args.frame_ms, hold_ms=args.hold_ms))


def _palette(text: str) -> render.Palette:
    try:
        return render.parse_palette(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> None:
    # The console script ``sprite-diffusion`` and ``python -m diffusion`` are one command.
    prog = "python -m diffusion" if sys.argv[0].endswith("__main__.py") else None
    parser = argparse.ArgumentParser(prog=prog, description="Sprite Diffusion")
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("sample", help="draw sprites, save a PNG sheet and a denoising GIF")
    s.add_argument("--model", default=None, help="model folder or Hub repo (default: shipped)")
    s.add_argument("--label", default=None, help="label name or index; 'none' = unconditional")
    s.add_argument(
        "--sampler", default=None, help=f"one of {', '.join(SAMPLERS)} (default: the model's)"
    )
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
    s.add_argument("--out", default="out", help="folder for LABEL.png and LABEL.gif (out/)")
    s.add_argument("--png", help="write the final sprite sheet here instead")
    s.add_argument("--gif", help="write the denoising animation here instead")
    s.add_argument("--show", choices=["x", "x0"], default="x", help="GIF shows noisy state or x0")
    s.add_argument("--scale", type=int, default=8, help="nearest-neighbour enlargement")
    s.add_argument("--frame-ms", type=int, default=80)
    s.add_argument("--hold-ms", type=int, default=1500)
    args = parser.parse_args(argv)
    try:
        _sample(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
