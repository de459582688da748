"""Where bf16 autocast starts to pay: one network call, float32 against bf16, by batch size.

    python -m benchmarks.precision [--model weights/sprites16] [--threads 1] [--batches 1,2,4]

Prints the median time of one call of the model's network at each batch size in float32 and in
bf16 autocast, on this machine's CPU (or ``--device``). ``diffusion.device.CPU_BF16_MIN_BATCH``
is the smallest batch at which bf16 did not lose on the CPUs it was measured on (docs/speed.md,
"Precision"); run this to check yours. For models that draw from labels (not an upscaler).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from diffusion import SpritePipeline
from diffusion.device import CPU_BF16_MIN_BATCH, bf16_is_fast, describe


def call_ms(pipe: SpritePipeline, batch: int, bf16: bool, repeats: int) -> float:
    x = torch.randn(batch, *pipe.state_shape, device=pipe.device)
    t = torch.full((batch,), pipe.schedule.T / 2, device=pipe.device)
    context = pipe.encode_context(pipe.labels[0], batch)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 3):  # the first calls pick oneDNN's kernels
            start = time.perf_counter()
            with torch.autocast(pipe.device.type, torch.bfloat16, enabled=bf16):
                pipe.model(x, t, context).float()
            if pipe.device.type == "cuda":
                torch.cuda.synchronize(pipe.device)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="a model folder (default: the shipped one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1,2,4,8,16,64")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    pipe = SpritePipeline.from_pretrained(args.model, device=args.device)
    if pipe.low_res:
        p.error(f"{args.model} is an upscaler: its network also takes the small sprite")
    torch.set_num_threads(args.threads)
    print(f"{describe(pipe.device)}; bf16 is fast here: {bf16_is_fast(pipe.device)}")
    print(f"CPU_BF16_MIN_BATCH = {CPU_BF16_MIN_BATCH}")
    print("batch   float32 ms   bf16 ms   bf16 / float32")
    for batch in (int(b) for b in args.batches.split(",")):
        fp32, bf16 = (call_ms(pipe, batch, on, args.repeats) for on in (False, True))
        print(f"{batch:5d}   {fp32:10.2f}   {bf16:7.2f}   {bf16 / fp32:14.2f}")


if __name__ == "__main__":
    main()
