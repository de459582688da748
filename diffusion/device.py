"""Where the network runs: CUDA, then Apple MPS, then CPU, unless DIFFUSION_DEVICE says."""

from __future__ import annotations

import os

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


def configure_cpu_threads() -> None:
    """Cap intra-op threads unless the user chose a count: a 16x16 network at batch 1 gets slower,
    not faster, when spread over many cores."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
