"""The app end to end over gradio_client: one client and many, what a request costs beyond its run.

    python -m benchmarks.concurrency [--model weights/sprites16] [--requests 6]
        [--sampler heun --steps 5] [--policies old new] [--tls default shared] [--app DIR]
        [--endpoints generate sprites]

Serves the app in a process of its own on a free port (from ``--app``, another checkout of this
repository, to compare with an older version: ``git worktree add /tmp/before <commit>``) and
sends /generate requests from 1, 2 and 8 concurrent gradio_client clients, for one sprite and
for a sheet of 16, at the model's defaults (guidance on) or ``--sampler``/``--steps``.
``--endpoints generate sprites`` also times ``/sprites``, the API's one-call endpoint (no
previews, no files: the sprites come back inlined in the answer).

- ``--policies``: the server's CPU threads, "old" (every run takes min(4, cores) threads, as
  before the thread policy) and/or "new" (``device.cpu_threads(CONCURRENCY)``, the app's).
- ``--tls``: the clients' TLS setup. gradio_client downloads every file of every streamed
  update, each through a new httpx client that loads the CA certificates again (about 25 ms of
  CPU on a 2-core EPYC, even for http://): "default" measures it as it comes, "shared" hands
  every client one ``ssl.SSLContext`` (``Client(url, ssl_verify=context)``, still verifying).

Reports sprites per second, the p50/p95 latency of a request, the run's own time as the app
reports it (median, from the status line), and the CPU time per request of the server process
and of the clients (Linux: from /proc). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Run in the served checkout: its app, its thread policy; "ready" once it answers.
SERVER = """
import os, sys, time
sys.path.insert(0, os.getcwd())
import torch
import app
from diffusion import SpritePipeline
model, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
demo = app.build_demo({"m": SpritePipeline.from_pretrained(model)})
torch.set_num_threads(threads)  # after build_demo, which sets the app's policy
app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
print("ready", flush=True)
while True:
    time.sleep(3600)
"""
RUN_TIME = re.compile(r"([\d.]+) s in all")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux), or nan where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(app_dir: Path, model: str, threads: int) -> tuple[subprocess.Popen, str]:
    """The app from ``app_dir`` in a process of its own; returns it and its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = str(Path(model).resolve())
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, model, str(port), str(threads)],
        cwd=app_dir,
        stdout=subprocess.PIPE,
        text=True,
    )
    if server.stdout.readline().strip() != "ready":
        server.kill()
        raise SystemExit(f"the app in {app_dir} did not start")
    return server, f"http://127.0.0.1:{port}/"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.concurrency", description=__doc__)
    p.add_argument("--model", default="weights/sprites16")
    p.add_argument("--requests", type=int, default=6, help="requests per client")
    p.add_argument("--sampler", help="default: the model's")
    p.add_argument("--steps", type=int, help="default: the model's for the sampler")
    p.add_argument("--policies", nargs="+", choices=["old", "new"], default=["old", "new"])
    p.add_argument("--tls", nargs="+", choices=["default", "shared"], default=["default"])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 8])
    p.add_argument("--n", type=int, nargs="+", default=[1, 16], help="sprites per request")
    p.add_argument("--app", type=Path, default=Path.cwd(), help="the checkout to serve")
    p.add_argument("--endpoints", nargs="+", choices=["generate", "sprites"], default=["generate"])
    args = p.parse_args()

    from diffusion import SpritePipeline
    from diffusion.device import cpu_threads
    from ui.limits import CONCURRENCY

    d = SpritePipeline.from_pretrained(args.model).defaults
    sampler = args.sampler or d["sampler"]
    steps = args.steps or d.get("sampler_steps", {}).get(sampler, d["steps"])
    cores = os.cpu_count() or 1
    policies = {"old": max(1, min(4, cores)), "new": cpu_threads(CONCURRENCY)}
    print(f"app {args.app.resolve()}, {args.model}: {sampler} {steps} steps, guidance "
          f"{d['guidance']}; {cores} cores, concurrency {CONCURRENCY}")  # fmt: skip
    head = {"endpoint": 10, "policy": 7, "threads": 8, "tls": 8, "clients": 8, "n": 4,
            "sprites/s": 10, "p50 s": 7, "p95 s": 7, "run s": 7, "server ms": 10,
            "client ms": 10}  # fmt: skip
    print("".join(f"{name:>{w}}" for name, w in head.items()), flush=True)
    for policy in args.policies:
        threads = policies[policy]
        server, url = serve(args.app, args.model, threads)
        try:
            for tls in args.tls:
                verify = ssl.create_default_context() if tls == "shared" else True
                for endpoint, n, clients in itertools.product(args.endpoints, args.n, args.clients):
                    job = {"label": "hero", "sampler": sampler, "steps": steps, "n": n,
                           "guidance": d["guidance"]}  # fmt: skip
                    row = measure(url, server.pid, verify, clients, args.requests, job, endpoint)
                    print(f"{endpoint:>10}{policy:>7}{threads:>8}{tls:>8}{clients:>8}{n:>4}{row}",
                          flush=True)  # fmt: skip
        finally:
            server.kill()
            server.wait()


def measure(
    url: str,
    pid: int,
    verify: ssl.SSLContext | bool,
    clients: int,
    requests: int,
    job: dict,
    endpoint: str,
) -> str:
    """``requests`` calls of ``job`` to ``/<endpoint>`` from each of ``clients`` concurrent
    clients: the table's columns from sprites/s on."""
    from gradio_client import Client

    pool_clients = [Client(url, verbose=False, ssl_verify=verify) for _ in range(clients)]
    runs: list[float] = []

    def one(i: int) -> float:
        start = time.perf_counter()
        client = pool_clients[i % clients]
        status = client.predict(**job, seed=i, api_name=f"/{endpoint}")[1]
        took = time.perf_counter() - start
        runs.append(float(RUN_TIME.search(status).group(1)))
        return took

    for i in range(clients):
        one(i)  # warm-up, and every client's session
    runs.clear()
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(clients * requests)))
    wall = time.perf_counter() - start
    server_ms = (cpu_seconds(pid) - server_cpu) / len(latencies) * 1e3
    client_ms = (time.process_time() - client_cpu) / len(latencies) * 1e3
    rate = len(latencies) * job["n"] / wall
    return (
        f"{rate:>10.2f}{statistics.median(latencies):>7.3f}{percentile(latencies, 0.95):>7.3f}"
        f"{statistics.median(runs):>7.3f}{server_ms:>10.0f}{client_ms:>10.0f}"
    )


if __name__ == "__main__":
    main()
