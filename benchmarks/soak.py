"""Server memory and disk over many requests: does either creep?

    python -m benchmarks.soak [--requests 1000] [--clients 4] [--every 100]
    python -m benchmarks.soak --sessions 2000 [--every 200] [--addresses 20]
    python -m benchmarks.soak --burst 40
    python -m benchmarks.soak --helpers 400

Starts the app in this process on a free port with a tiny random model (memory and files, not
pictures, are measured), sends ``--requests`` /generate calls from ``--clients`` threads
through gradio_client, and prints the server's resident memory (RSS) and the files in Gradio's
cache and our run folders every ``--every`` requests, with the cache sweeper running as in
production but with short ages so that a sweep happens during the run.

``--sessions N`` instead sends N one-sprite /generate calls over raw HTTP, each a new session
(as every API call without a session is), from ``--addresses`` client addresses in turn (behind a
pretended proxy), and prints RSS, the sessions held (at most ``ui.limits.MAX_SESSIONS``), the
most one address holds (at most ``MAX_SESSIONS_PER_CLIENT``), and whether a visitor who came
first, from another address, and then stayed idle still has the session it had (Gradio's own
store would drop it first). ``--burst N`` uploads N files of the
largest size allowed at once from one address, and prints what reached the disk.
``--helpers N`` sends N calls of one of the page's quick helpers through ``/run/predict``, 32
at a time from one address, then N that the gate refuses outright (no session), and times
another visitor's 16-sprite /generate run alone and during each flood.
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
from collections import Counter
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
    p.add_argument("--sessions", type=int, default=0, help="new sessions, one call each")
    p.add_argument("--addresses", type=int, default=20, help="client addresses --sessions uses")
    p.add_argument("--burst", type=int, default=0, help="largest uploads, all at once")
    p.add_argument("--helpers", type=int, default=0, help="page-helper calls, 32 at a time")
    args = p.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="soak-cache-"))
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.sessions:  # X-Forwarded-For names the caller, as behind a Space's proxy
        os.environ["SPRITE_STUDIO_PROXY_HOPS"] = "1"
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
    if args.sessions:
        sessions(f"http://127.0.0.1:{port}", demo, args.sessions, args.every, args.addresses)
    elif args.burst:
        burst(f"http://127.0.0.1:{port}", folders, args.burst)
    elif args.helpers:
        helpers(f"http://127.0.0.1:{port}", demo, args.helpers)
    else:
        requests(f"http://127.0.0.1:{port}/", folders, args)
    sweeper.stop()
    demo.close()


def sessions(url: str, demo, count: int, every: int, addresses: int) -> None:
    """``count`` calls, each from a new session, from ``addresses`` addresses in turn; every
    ``every``: RSS, the sessions held, the most one address holds, and the first visitor's."""
    import httpx

    from ui.gate import page_helpers
    from ui.limits import MAX_SESSIONS, MAX_SESSIONS_PER_CLIENT

    call = {"label": "hero", "sampler": "ddim", "steps": 1, "guidance": 2.0, "seed": 0, "n": 1}
    seed = next(i for i in page_helpers(demo) if demo.fns[i].api_name == "random_seed")
    visit = {"data": [], "fn_index": seed, "session_hash": "visitor"}
    httpx.post(
        f"{url}/gradio_api/run/predict", json=visit, headers={"x-forwarded-for": "10.255.0.1"}
    )
    store = demo.state_holder
    visitor = store.session_data["visitor"]
    print(
        f"caps: {MAX_SESSIONS} sessions (ui.limits.MAX_SESSIONS), {MAX_SESSIONS_PER_CLIENT} per "
        f"address (MAX_SESSIONS_PER_CLIENT); {addresses} addresses"
    )
    print(f"{'sessions':>9}{'RSS MB':>9}{'held':>7}{'busiest':>9}{'visitor':>9}{'seconds':>9}")
    start = time.time()
    with httpx.Client(base_url=f"{url}/gradio_api", timeout=60) as http:
        for i in range(1, count + 1):
            address = {"x-forwarded-for": f"10.1.{i % addresses // 256}.{i % addresses % 256}"}
            event = http.post("/call/v2/generate", json={**call, "seed": i}, headers=address)
            http.get(f"/call/generate/{event.json()['event_id']}").raise_for_status()  # until done
            if i % every == 0:
                held = list(store.session_data)
                busiest = max(Counter(store.owner(s) for s in held).values())
                kept = "kept" if store.session_data.get("visitor") is visitor else "lost"
                print(
                    f"{i:>9}{rss_mb():>9.0f}{len(held):>7}{busiest:>9}{kept:>9}"
                    f"{time.time() - start:>9.0f}"
                )


def burst(url: str, folders: list[Path], count: int) -> None:
    """``count`` uploads of MAX_UPLOAD_BYTES at once from one address, and the disk after."""
    import httpx

    from ui.limits import MAX_UPLOAD_BYTES

    picture = b"\x89PNG" + b"\x00" * (MAX_UPLOAD_BYTES - 4096)
    before = files_in(folders)[1]

    def upload(i: int) -> int:  # each file different: Gradio keeps one copy of equal files
        files = {"files": ("big.png", picture + i.to_bytes(4, "big"), "image/png")}
        return httpx.post(f"{url}/gradio_api/upload", files=files, timeout=60).status_code

    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(upload, range(count)))
    taken, mb = codes.count(200), files_in(folders)[1] - before
    print(
        f"{count} uploads of {len(picture) / 2**20:.1f} MB in {time.time() - start:.1f} s: "
        f"{taken} taken, {codes.count(429)} refused (429); the disk grew by {mb:.1f} MB"
    )


def helpers(url: str, demo, count: int) -> None:
    """``count`` calls of a quick helper from one address, 32 at a time, then as many that the
    gate refuses outright, and how long another visitor's 16-sprite run takes during each."""
    import httpx

    from ui.gate import page_helpers
    from ui.limits import MAX_HELPERS_PER_CLIENT

    seed = next(i for i in page_helpers(demo) if demo.fns[i].api_name == "random_seed")
    page = {"data": [], "fn_index": seed, "session_hash": "flood"}
    run = {"label": "hero", "sampler": "ddim", "steps": 20, "guidance": 2.0, "seed": 0, "n": 16}

    def generate() -> float:
        start = time.perf_counter()
        with httpx.Client(base_url=f"{url}/gradio_api", timeout=300) as http:
            event = http.post("/call/v2/generate", json=run).json()["event_id"]
            http.get(f"/call/generate/{event}").raise_for_status()
        return time.perf_counter() - start

    generate()  # warm up
    print(f"another visitor's 16-sprite run alone: {generate():.2f} s")
    print(f"ui.limits.MAX_HELPERS_PER_CLIENT = {MAX_HELPERS_PER_CLIENT}")
    for what, body in (
        ("helper calls", page),
        ("calls without a session", {**page, "session_hash": None}),
    ):

        def call(_: int, body: dict = body) -> int:
            return httpx.post(f"{url}/gradio_api/run/predict", json=body, timeout=60).status_code

        with ThreadPoolExecutor(33) as pool:
            other = pool.submit(generate)
            start = time.time()
            codes = list(pool.map(call, range(count)))
            seconds = time.time() - start
            during = other.result()
        print(
            f"{count} {what} in {seconds:.1f} s: {codes.count(200)} answered, "
            f"{codes.count(429)} refused (429), {codes.count(404)} refused (404); "
            f"the other run meanwhile: {during:.2f} s"
        )


def requests(url: str, folders: list[Path], args: argparse.Namespace) -> None:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(args.clients)]

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


if __name__ == "__main__":
    main()
