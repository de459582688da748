"""Sampler speed: ms per step and overhead over the bare network, at batch 1 and 64.

    python -m benchmarks.sampling [--model weights/sprites16] [--batches 1 64] [--repeats 3]

The overhead ratio is wall time / (model calls x time of one bare forward pass at the same batch):
1.00 means the sampler, guidance plumbing and frame rendering cost nothing beside the network.
Heun makes two calls a step, so its ratio divides by calls, not steps. Guidance is 1 here (one
network pass a call); with guidance != 1 each call runs a doubled batch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffusion import SAMPLERS, SpritePipeline


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_forward_s(pipe: SpritePipeline, batch: int, repeats: int) -> float:
    x = torch.randn(batch, pipe.channels, pipe.resolution, pipe.resolution, device=pipe.device)
    t = torch.full((batch,), pipe.schedule.T / 2, device=pipe.device)
    context = pipe.encode_context(0, batch)
    with torch.inference_mode():
        for _ in range(3):
            pipe.model(x, t, context)
        calls = 20
        return best_of(lambda: [pipe.model(x, t, context) for _ in range(calls)], repeats) / calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model folder or Hub id (default: shipped)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    pipe = SpritePipeline.from_pretrained(args.model)
    print(f"device {pipe.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'sampler':16} {'batch':>5} {'steps':>5} {'calls':>5} {'ms/step':>8} {'overhead':>8}")
    ratios = []
    for batch in args.batches:
        forward = bare_forward_s(pipe, batch, args.repeats)
        print(f"{'bare forward':16} {batch:5d} {'':5} {1:5d} {forward * 1e3:8.2f} {1:8.2f}")
        for name in args.samplers:
            spec = SAMPLERS[name]
            steps = spec.default_steps
            calls = spec.calls(steps)

            def run(name=name, steps=steps, batch=batch):
                pipe.generate(0, n=batch, sampler=name, steps=steps, guidance=1.0, seed=0)

            wall = best_of(run, args.repeats)
            ratio = wall / (calls * forward)
            ratios.append(ratio)
            print(
                f"{name:16} {batch:5d} {steps:5d} {calls:5d} {wall / steps * 1e3:8.2f} {ratio:8.2f}"
            )
    print(f"median overhead {statistics.median(ratios):.3f}, worst {max(ratios):.3f}")


if __name__ == "__main__":
    main()
