"""The user's wait: one sprite and a sheet of 16 at the model's defaults, against references.

    python -m benchmarks.latency [--model weights/sprites16] [--threads 1 2] [--repeats 20]
        [--prompt "red potion"] [--compile]

All in one run, for each thread count and each of float32 / the model's precision (bf16 on a
CPU only for batches of ``diffusion.device.CPU_BF16_MIN_BATCH`` or more, as the app runs it):
- ``pipeline, defaults``: ``SpritePipeline.generate`` at the model's defaults (sampler, steps,
  guidance, palette stage; with ``--prompt``, the text encoder too); ``first frame``: the time to
  the first frame of ``stream``;
- ``bare network, defaults``: the guided network calls the defaults make, alone (the floor any
  implementation of that sampler pays);
- ``pipeline, dpmpp_2m 20`` beside ``diffusers, dpmpp_2m 20``: our DPM-Solver++(2M) and the same
  network, steps and guidance in diffusers' ``DPMSolverMultistepScheduler`` loop;
- ``20 guided calls``: the cost of the old default (20 steps of dpmpp_2m), the yardstick of the
  0.6x target.

Times are medians of ``--repeats`` runs after warm-up (and the minimum). Needs
``pip install diffusers`` (not a dependency of the app). ``--compile`` adds torch.compile
(reporting its start-up cost).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from diffusion import SAMPLERS, SpritePipeline


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()  # warm-up (oneDNN picks kernels on first use)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def first_frame(pipe: SpritePipeline, n: int, repeats: int, prompt: str | None) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        next(iter(pipe.stream("hero", n=n, seed=0, prompt=prompt)))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_calls(pipe: SpritePipeline, n: int, calls: int) -> Callable[[], None]:
    x = torch.randn(2 * n, pipe.channels, pipe.resolution, pipe.resolution)
    t = torch.full((2 * n,), pipe.schedule.T / 2)
    context = torch.cat([pipe.encode_context("hero", n), torch.zeros(n, len(pipe.labels))])
    bf16 = pipe.uses_bf16(2 * n)

    @torch.inference_mode()
    def run() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            for _ in range(calls):
                pipe.model(x, t, context)

    return run


def diffusers_loop(pipe: SpritePipeline, n: int, steps: int, guidance: float):
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=pipe.schedule.T,
        trained_betas=pipe.schedule.betas.double().numpy(),
        prediction_type="v_prediction" if pipe.model.config.prediction == "v" else "epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
    )
    context = torch.cat([pipe.encode_context("hero", n), torch.zeros(n, len(pipe.labels))])
    generator = torch.Generator().manual_seed(0)
    bf16 = pipe.uses_bf16(2 * n)

    @torch.inference_mode()
    def run() -> torch.Tensor:
        scheduler.set_timesteps(steps)
        x = torch.randn(n, pipe.channels, pipe.resolution, pipe.resolution, generator=generator)
        for t in scheduler.timesteps:
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                out = pipe.model(torch.cat([x, x]), t.float().expand(2 * n), context).float()
            cond, uncond = out.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        return x

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--prompt", help="a text model's prompt: the user's job then encodes it too")
    args = p.parse_args()
    pipe = SpritePipeline.from_pretrained(args.model, device="cpu")
    d = pipe.defaults
    precision = d.get("precision", "fp32")
    calls = SAMPLERS[d["sampler"]].calls(d["steps"])
    print(
        f"torch {torch.__version__}, defaults {d['sampler']} {d['steps']} steps, "
        f"guidance {d['guidance']}, palette {d.get('palette')}, precision {precision}"
    )
    print(f"{'threads':>7} {'prec':>5} {'n':>3} {'what':<24} {'median ms':>10} {'min ms':>8}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for prec in dict.fromkeys(["fp32", precision]):
            pipe.defaults["precision"] = prec
            for n in (1, 16):
                repeats = args.repeats if n == 1 else max(3, args.repeats // 4)
                rows = {
                    "pipeline, defaults": lambda n=n: pipe.generate(
                        "hero", n=n, seed=0, prompt=args.prompt
                    ),
                    "bare network, defaults": bare_calls(pipe, n, calls),
                    "pipeline, dpmpp_2m 20": lambda n=n: pipe.generate(
                        "hero", n=n, seed=0, sampler="dpmpp_2m", steps=20, palette=None
                    ),
                    "diffusers, dpmpp_2m 20": diffusers_loop(pipe, n, 20, d["guidance"]),
                    "20 guided calls": bare_calls(pipe, n, 20),
                }
                for what, fn in rows.items():
                    med, best = timed(fn, repeats)
                    print(
                        f"{threads:7d} {prec:>5} {n:3d} {what:<24} {med * 1e3:10.1f} "
                        f"{best * 1e3:8.1f}",
                        flush=True,
                    )
                ttff = first_frame(pipe, n, repeats, args.prompt)
                print(f"{threads:7d} {prec:>5} {n:3d} {'first frame':<24} {ttff * 1e3:10.1f}")
    pipe.defaults["precision"] = precision
    if args.compile:
        compile_report(pipe, args.repeats)


def compile_report(pipe: SpritePipeline, repeats: int) -> None:
    """torch.compile of the network: start-up cost (first call) and the one-sprite time."""
    eager = pipe.model
    start = time.perf_counter()
    pipe.model = torch.compile(eager, dynamic=False)
    try:
        pipe.generate("hero", n=1, seed=0)
    except Exception as err:  # a compiler missing or failing is a finding, not a crash
        print(f"torch.compile failed: {type(err).__name__}: {err}")
        pipe.model = eager
        return
    startup = time.perf_counter() - start
    med, best = timed(lambda: pipe.generate("hero", n=1, seed=0), repeats)
    print(f"torch.compile: start-up {startup:.1f} s; one sprite {med * 1e3:.1f} ms "
          f"(min {best * 1e3:.1f})")  # fmt: skip
    pipe.model = eager


if __name__ == "__main__":
    main()
