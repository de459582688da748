"""Command line: ``python -m diffusion sample --label hero`` (or ``sprite-diffusion sample ...``).

A thin caller of the public API, like the app: load a pipeline, stream the frames, render them.
The sheet and the denoising GIF go to ``--out`` (``out/`` by default, which git ignores) as
``<label>.png`` and ``<label>.gif``; ``--png`` / ``--gif`` name the files instead. ``--sheet``
writes the PNG as a game engine's sprite sheet (no gutters, Aseprite JSON beside it).

``python -m diffusion upscale IN.png --out OUT.png`` enlarges a sprite 2x with the shipped
upscaler (transparency kept).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from . import render
from .pipeline import UPSCALER, Frame, SpritePipeline
from .samplers import SAMPLERS

# --palette left out: the model's own palette stage (its config's sampling.palette), as in the
# app, so the command line shows the sprites the app shows; "--palette raw" asks for the raw pixels.
_MODEL_PALETTE = object()


def _run(stream: Iterator[Frame]) -> list[Frame]:
    """Every frame of a run, with its progress and time on stderr."""
    start = time.perf_counter()
    frames = []
    for frame in stream:
        frames.append(frame)
        print(f"\rstep {frame.step}/{frame.total}", end="", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    print(f"\r{frames[-1].total} steps in {elapsed:.2f} s, seed {frames[-1].seed}", file=sys.stderr)
    return frames


def _palette_stage(args: argparse.Namespace, pipe: SpritePipeline) -> render.Palette:
    return pipe.defaults.get("palette") if args.palette is _MODEL_PALETTE else args.palette


def _sample(args: argparse.Namespace) -> None:
    pipe = SpritePipeline.from_pretrained(args.model)
    context = None if args.label in (None, "none") else args.label
    if args.palette_lock is not None:
        if args.palette not in (_MODEL_PALETTE, args.palette_lock):
            raise ValueError("--palette-lock K is a palette of K colours: leave out --palette")
        args.palette = args.palette_lock
    if context is not None and context.isdigit():
        context = int(context)
    frames = _run(
        pipe.stream(
            context,
            n=args.n,
            sampler=args.sampler,
            steps=args.steps,
            guidance=args.guidance,
            guidance_sigma_min=args.guidance_sigma_min,
            seed=args.seed,
            eta=args.eta,
            spacing=args.spacing,
            palette=_palette_stage(args, pipe),
            prompt=args.prompt,
            guide=args.guide,
            guidance_text=args.guidance_text,
            negative_prompt=args.negative_prompt,
            rerank=args.rerank,
            palette_lock=args.palette_lock is not None,
            tileable=args.tileable,
            outline=args.outline,
        )
    )
    last = frames[-1]
    if last.scores is not None:
        best = f" (best of {args.rerank})" if args.rerank > 1 else ""
        scores = " ".join(f"{s:.3f}" for s in last.scores)
        print(f"SpriteCLIP score against the prompt{best}: {scores}", file=sys.stderr)
    stem = Path(args.out) / (args.label or "none")
    png, gif = Path(args.png or f"{stem}.png"), Path(args.gif or f"{stem}.gif")
    for path in (png, gif):
        path.parent.mkdir(parents=True, exist_ok=True)
    if args.sheet:
        print(
            render.save_sheet(
                frames[-1].x, png, scale=args.scale, tags=[(stem.name, 0, args.n - 1)]
            )
        )
        print(png.with_suffix(".json"))
    else:
        print(render.save_png(render.grid(frames[-1].x, scale=args.scale), png))
    # Best of N: the frames before the last hold every candidate; the GIF follows those kept.
    rows = slice(None) if last.picked is None else last.picked
    pictures = [
        render.grid(getattr(f, args.show)[rows if f is not last else slice(None)], args.scale)
        for f in frames
    ]
    print(render.save_gif(pictures, gif, frame_ms=args.frame_ms, hold_ms=args.hold_ms))


def _upscale(args: argparse.Namespace) -> None:
    pipe = SpritePipeline.from_pretrained(args.model or UPSCALER)
    if not pipe.low_res:
        raise ValueError(f"{args.model} is not an upscaler (its config has no low_res)")
    try:
        with Image.open(args.input) as image:
            image.load()
            sprite = image.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{args.input}: not an image Pillow can read ({err})") from None
    frames = _run(
        pipe.stream(
            None,
            low_res=sprite,
            sampler=args.sampler,
            steps=args.steps,
            seed=args.seed,
            palette=_palette_stage(args, pipe),
        )
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(render.save_png(render.grid(frames[-1].x, scale=args.scale), out))
    if args.gif:
        pictures = [render.grid(f.x0, scale=8) for f in frames]
        print(render.save_gif(pictures, args.gif))


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
    s.add_argument(
        "--guidance-sigma-min",
        type=float,
        default=None,
        help="guidance only at noise levels above this sigma (default: the model's)",
    )
    s.add_argument("--eta", type=float, default=None)
    s.add_argument("--spacing", default=None, choices=["uniform", "karras"])
    s.add_argument(
        "--palette",
        type=_palette,
        default=_MODEL_PALETTE,
        help="output stage: 'raw' keeps the network's pixels, 'data' snaps to the model's "
        "training palette, K keeps at most K colours per sprite, a name (db16, db32, pico8, "
        "gameboy), a .hex/.gpl/.png file or '#rrggbb,#rrggbb,...' snap to those colours; "
        "default: the model's own (as in the app)",
    )
    s.add_argument(
        "--palette-lock",
        type=int,
        metavar="K",
        help="one palette of at most K colours for the whole batch (a consistent sheet)",
    )
    s.add_argument(
        "--tileable", action="store_true", help="seamless tiles: edges wrap around (terrain)"
    )
    s.add_argument("--outline", help="a one-pixel outline of this colour (#rrggbb), RGBA models")
    s.add_argument(
        "--sheet",
        action="store_true",
        help="write the PNG as a sprite sheet without gutters, with Aseprite JSON beside it",
    )
    s.add_argument("--prompt", help='describe the sprite, e.g. "red potion" (a text model only)')
    s.add_argument(
        "--guide", default="both", choices=["both", "label", "text"], help="what guidance follows"
    )
    s.add_argument(
        "--guidance-text",
        type=float,
        default=None,
        help="the prompt's own guidance scale; --guidance is then the label's (dual guidance)",
    )
    s.add_argument("--negative-prompt", help='what guidance steers away from, e.g. "dark"')
    s.add_argument(
        "--rerank",
        type=int,
        default=1,
        metavar="N",
        help="best of N: draw N candidates per sprite, keep the one SpriteCLIP scores highest",
    )
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="out", help="folder for LABEL.png and LABEL.gif (out/)")
    s.add_argument("--png", help="write the final sprite sheet here instead")
    s.add_argument("--gif", help="write the denoising animation here instead")
    s.add_argument("--show", choices=["x", "x0"], default="x", help="GIF shows noisy state or x0")
    s.add_argument(
        "--scale", type=int, default=8, help="nearest-neighbour enlargement (1, 2, 4, 8)"
    )
    s.add_argument("--frame-ms", type=int, default=80)
    s.add_argument("--hold-ms", type=int, default=1500)
    u = commands.add_parser("upscale", help="enlarge a sprite 2x with a diffusion upscaler")
    u.add_argument("input", metavar="IN.png", help="the sprite (16x16 for the shipped upscaler)")
    u.add_argument("--out", required=True, help="where to write the enlarged sprite (PNG)")
    u.add_argument("--model", default=None, help="upscaler folder or Hub repo (default: shipped)")
    u.add_argument("--sampler", default=None, help="default: the upscaler's")
    u.add_argument("--steps", type=int, default=None)
    u.add_argument("--seed", type=int, default=0)
    u.add_argument(
        "--palette", type=_palette, default=_MODEL_PALETTE, help="output stage, as for sample"
    )
    u.add_argument("--scale", type=int, default=1, help="nearest-neighbour enlargement of OUT")
    u.add_argument("--gif", help="also write the denoising animation here")
    args = parser.parse_args(argv)
    try:
        (_upscale if args.command == "upscale" else _sample)(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
