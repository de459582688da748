"""Sprites per second on a GPU (or any device), and the wait for one app request.

    python -m benchmarks.gpu                       # every model under weights/, on CUDA
    python -m benchmarks.gpu --device cpu --batches 1,4 --steps 2     # the CPU smoke run

For each model folder and each variant (float32, bf16 autocast, and on CUDA torch.compile and
CUDA graphs, i.e. ``torch.compile(mode="reduce-overhead")``), it prints sprites per second of
``SpritePipeline.generate`` at batch sizes ``--batches`` at the model's default sampler and
steps (``--steps`` overrides), then the time to the first frame and to the finished GIF of one
request as the app makes it (16 sprites, streamed, every frame rendered into the GIF). The same
code runs on every device: only ``--device`` changes. Sized to finish within 5 minutes on one
GPU; it has not yet run on one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from diffusion import SpritePipeline, render
from diffusion.device import describe
from diffusion.pipeline import WEIGHTS

VARIANTS = ("fp32", "bf16", "compile", "cuda-graphs")


def models(names: list[str]) -> list[Path]:
    if names:
        return [Path(n) for n in names]
    return sorted(c.parent for c in WEIGHTS.glob("*/config.json") if "format" in c.read_text())


def variants(device: torch.device, chosen: tuple[str, ...] = VARIANTS) -> Iterator[str]:
    """The chosen variants that apply on this device (compile and CUDA graphs on CUDA only: on a
    CPU compile's start-up costs more than it saves at these sizes, see docs/speed.md)."""
    for variant in chosen:
        if variant in ("compile", "cuda-graphs") and device.type != "cuda":
            continue
        if variant == "bf16" and device.type == "cpu":
            continue
        yield variant


def load(folder: Path, device: torch.device, variant: str) -> SpritePipeline:
    pipe = SpritePipeline.from_pretrained(folder, device=str(device))
    pipe.defaults["precision"] = "fp32" if variant == "fp32" else "bf16"
    if variant == "compile":
        pipe.model = torch.compile(pipe.model, dynamic=False)
    elif variant == "cuda-graphs":
        pipe.model = torch.compile(pipe.model, mode="reduce-overhead", dynamic=False)
    return pipe


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sprites_per_second(pipe: SpritePipeline, batch: int, steps: int | None, repeats: int) -> float:
    label = pipe.labels[0]
    pipe.generate(label, n=batch, steps=steps, seed=0)  # warm-up: kernels, compilation, graphs
    sync(pipe.device)
    start = time.perf_counter()
    for i in range(repeats):
        pipe.generate(label, n=batch, steps=steps, seed=i)
    sync(pipe.device)
    return batch * repeats / (time.perf_counter() - start)


def app_request(pipe: SpritePipeline, steps: int | None, n: int = 16) -> tuple[float, float]:
    """Seconds to the first frame and to the finished GIF of one streamed request of n sprites."""
    label = pipe.labels[0]
    list(pipe.stream(label, n=n, steps=steps, seed=0))  # warm-up
    start = time.perf_counter()
    frames, first = [], None
    for frame in pipe.stream(label, n=n, steps=steps, seed=1):
        frames.append(render.grid(frame.x0, scale=4, cols=4))
        first = first or time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        render.save_gif(frames, Path(folder) / "run.gif")
    return first, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", help="model folders (default: every one under weights/)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", default="1,16,256,4096")
    p.add_argument("--steps", type=int, default=None, help="default: each model's own")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help="a comma-separated subset, in this order"
    )
    p.add_argument("--json", type=Path, help="also write the figures here, after each variant")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    chosen = tuple(v.strip() for v in args.variants.split(","))
    if unknown := set(chosen) - set(VARIANTS):
        p.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    results: dict = {"device": describe(device), "torch": torch.__version__, "models": {}}
    print(f"device: {results['device']}, torch {torch.__version__}")
    for folder in models(args.models):
        figures = results["models"][str(folder)] = {}
        for variant in variants(device, chosen):
            pipe = load(folder, device, variant)
            rates = {b: sprites_per_second(pipe, b, args.steps, args.repeats) for b in batches}
            first, gif = app_request(pipe, args.steps)
            figures[variant] = {"sprites_per_s": rates, "first_frame_s": first, "gif_s": gif}
            print(
                f"{folder!s:24s} {variant:11s} "
                + "  ".join(f"b{b}: {r:9.1f}/s" for b, r in rates.items())
                + f"  first frame {1000 * first:6.1f} ms, GIF {1000 * gif:7.1f} ms"
            )
            # Written as it goes: a run stopped at a time limit keeps what it measured.
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
