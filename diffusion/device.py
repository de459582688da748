"""Where the network runs: CUDA, then Apple MPS, then CPU, unless DIFFUSION_DEVICE says."""

from __future__ import annotations

import os
import platform

import torch


def default_device() -> torch.device:
    """The best available device; the env var DIFFUSION_DEVICE (e.g. "cpu", "cuda:1") overrides."""
    if name := os.environ.get("DIFFUSION_DEVICE"):
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_threads(concurrent_runs: int = 1) -> int:
    """Threads per sampling run such that concurrent runs x threads never exceed the cores.

    On a shared core OpenMP threads spin while they wait for each other: on 2 cores, 2-thread
    runs beside any other load were 20-50x slower than 1-thread ones. A 16x16 network also gains
    nothing beyond 4 threads. DIFFUSION_THREADS, then OMP_NUM_THREADS, override the policy.
    """
    for variable in ("DIFFUSION_THREADS", "OMP_NUM_THREADS"):
        if value := os.environ.get(variable, "").strip():
            return max(1, int(value))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) // max(1, concurrent_runs)))


def configure_cpu_threads(concurrent_runs: int = 1) -> int:
    """Set torch's intra-op threads by :func:`cpu_threads` (process-wide), and return them."""
    threads = cpu_threads(concurrent_runs)
    torch.set_num_threads(threads)
    return threads


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast pays here: a CUDA GPU with bf16, or a CPU whose oneDNN has bf16
    kernels (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


# bf16 autocast casts every weight to bf16 on every network call. On a CPU a lone input (a
# batch of 1) is too little work to pay for that cast: 1.4x float32's time on a Xeon with AMX.
# A batch of 2 (one guided sprite) was even there and faster in bf16 on an AMD EPYC with
# AVX512-BF16. Figures and `python -m benchmarks.precision`: docs/speed.md, "Precision".
CPU_BF16_MIN_BATCH = 2


def bf16_pays(device: torch.device, batch: int) -> bool:
    """Whether one network call on ``batch`` inputs should run in bf16 autocast, given a device
    where :func:`bf16_is_fast`: always on a GPU, from a batch of ``CPU_BF16_MIN_BATCH`` on a CPU."""
    return device.type != "cpu" or batch >= CPU_BF16_MIN_BATCH


def describe(device: torch.device) -> str:
    """The hardware in words, for model cards: the GPU's name, or the CPU's name (where the
    system tells it), cores and threads: a CPU run's speed depends on which CPU it was."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"CPU ({cpu_name()}), {cores} cores, {torch.get_num_threads()} torch threads"
    return device.type


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name from Linux's ``cpuinfo`` (with the features that make bf16 fast), or
    what ``platform`` knows elsewhere."""
    try:
        with open(cpuinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor() or platform.machine() or "unknown"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name") or platform.machine() or "unknown"
    flags = set(fields.get("flags", "").split())
    if "amx_bf16" in flags:
        return f"{name} with AMX"
    if "avx512_bf16" in flags:
        return f"{name} with AVX512-BF16"
    return name
