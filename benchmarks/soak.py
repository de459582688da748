"""Server memory and disk over many requests: does either creep?

    python -m benchmarks.soak [--requests 1000] [--clients 4] [--every 100]

Starts the app in this process on a free port with a tiny random model (memory and files, not
pictures, are measured), sends ``--requests`` /generate calls from ``--clients`` threads
through gradio_client, and prints the server's resident memory (RSS) and the files in Gradio's
cache and our run folders every ``--every`` requests, with the cache sweeper running as in
production but with short ages so that a sweep happens during the run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def files_in(folders: list[Path]) -> tuple[int, float]:
    sizes = []
    for path in (p for f in folders for p in f.rglob("*")):
        with contextlib.suppress(OSError):  # the sweeper may delete it meanwhile
            if path.is_file():
                sizes.append(path.stat().st_size)
    return len(sizes), sum(sizes) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--every", type=int, default=100)
    p.add_argument(
        "--trim", action="store_true", help="also show RSS after glibc's malloc_trim(0) each time"
    )
    args = p.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="soak-cache-"))
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    import app
    from tests.test_app import tiny_pipeline
    from ui.storage import CacheSweeper, OutputStore

    store = OutputStore()
    demo = app.build_demo({"tiny": tiny_pipeline()}, store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.launch(
        demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    folders = [cache, store.root]
    sweeper = CacheSweeper(folders, every_s=5, max_age_s=20, min_age_s=10, protect=store.is_live)
    sweeper.start()
    clients = [Client(f"http://127.0.0.1:{port}/", verbose=False) for _ in range(args.clients)]

    def one(i: int) -> None:
        clients[i % len(clients)].predict(
            label="hero", sampler="ddim", steps=5, guidance=2.0, seed=i, n=4, api_name="/generate"
        )

    trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim if args.trim else None
    print(
        f"{'requests':>9}{'RSS MB':>9}{'trimmed':>9}{'threads':>8}{'files':>8}{'MB on disk':>12}"
        f"{'seconds':>9}"
    )
    start = time.time()
    done = 0
    with ThreadPoolExecutor(args.clients) as pool:
        while done < args.requests:
            batch = min(args.every, args.requests - done)
            list(pool.map(one, range(done, done + batch)))
            done += batch
            n, mb = files_in(folders)
            rss = rss_mb()
            trimmed = f"{(trim(0), rss_mb())[1]:>9.0f}" if trim else f"{'-':>9}"
            print(
                f"{done:>9}{rss:>9.0f}{trimmed}{threading.active_count():>8}{n:>8}{mb:>12.1f}"
                f"{time.time() - start:>9.0f}"
            )
    sweeper.stop()
    demo.close()


if __name__ == "__main__":
    main()
