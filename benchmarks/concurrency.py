"""The app under concurrent clients, with the old and the new CPU thread policy, in one run.

    python -m benchmarks.concurrency [--model weights/sprites16] [--requests 6]

For each policy ("old": every run takes min(4, cores) threads, as before the thread policy;
"new": ``device.cpu_threads(CONCURRENCY)``, one thread per run on 2 cores), serves the app on a
free port and sends /generate requests from 1, 2 and 8 concurrent gradio_client clients, for one
sprite and for a sheet of 16, at the model's defaults (guidance on). Reports sprites per second
and the p50/p95 latency of a request. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.concurrency", description=__doc__)
    p.add_argument("--model", default="weights/sprites16")
    p.add_argument("--requests", type=int, default=6, help="requests per client")
    args = p.parse_args()

    import torch
    from gradio_client import Client

    import app
    from diffusion import SpritePipeline
    from diffusion.device import cpu_threads
    from ui.limits import CONCURRENCY

    pipe = SpritePipeline.from_pretrained(args.model)
    d = pipe.defaults
    cores = os.cpu_count() or 1
    policies = {"old": max(1, min(4, cores)), "new": cpu_threads(CONCURRENCY)}
    print(f"{pipe.defaults}, {cores} cores, concurrency {CONCURRENCY}")
    widths = {"policy": 7, "threads": 8, "clients": 8, "n": 4, "sprites/s": 11, "p50 s": 8}
    print("".join(f"{name:>{w}}" for name, w in widths.items()) + f"{'p95 s':>8}")
    for policy, threads in policies.items():
        demo = app.build_demo({"m": pipe})
        torch.set_num_threads(threads)  # after build_demo, which sets the new policy
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app.launch(
            demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
        )
        url = f"http://127.0.0.1:{port}/"
        for n in (1, 16):
            for clients in (1, 2, 8):
                pool_clients = [Client(url, verbose=False) for _ in range(clients)]

                def one(i: int, n: int = n, pool_clients: list = pool_clients) -> float:
                    start = time.perf_counter()
                    pool_clients[i % len(pool_clients)].predict(
                        label="hero", sampler=d["sampler"], steps=d["steps"],
                        guidance=d["guidance"], seed=i, n=n, api_name="/generate",
                    )  # fmt: skip
                    return time.perf_counter() - start

                one(0)  # warm-up
                start = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    latencies = list(pool.map(one, range(clients * args.requests)))
                wall = time.perf_counter() - start
                rate = len(latencies) * n / wall
                print(
                    f"{policy:>7}{threads:>8}{clients:>8}{n:>4}{rate:>11.1f}"
                    f"{statistics.median(latencies):>8.2f}{percentile(latencies, 0.95):>8.2f}"
                )
        demo.close()


if __name__ == "__main__":
    main()
