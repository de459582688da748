"""The GPU benchmark's code path, run on the CPU: the same code with another device."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu
from tests.test_app import tiny_pipeline


def test_gpu_benchmark_runs_on_cpu(tmp_path):
    folder = tmp_path / "tiny"
    tiny_pipeline().save_pretrained(folder)
    out = tmp_path / "gpu.json"
    gpu.main([str(folder), "--device", "cpu", "--batches", "1,3", "--steps", "2",
              "--repeats", "1", "--json", str(out)])  # fmt: skip
    figures = json.loads(out.read_text())
    assert figures["device"].startswith("CPU")
    # Keyed by the folder as given: a run folder and the shipped one may share a name.
    fp32 = figures["models"][str(folder)]["fp32"]
    assert set(figures["models"][str(folder)]) == {"fp32"}  # compile and graphs are CUDA-only
    assert set(fp32["sprites_per_s"]) == {"1", "3"} and all(
        r > 0 for r in fp32["sprites_per_s"].values()
    )
    assert 0 < fp32["first_frame_s"] < fp32["gif_s"]


def test_variants_are_a_checked_subset(capsys):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert list(gpu.variants(cuda)) == ["fp32", "bf16", "compile", "cuda-graphs"]
    assert list(gpu.variants(cuda, ("fp32", "compile"))) == ["fp32", "compile"]
    assert list(gpu.variants(cpu)) == ["fp32"]
    with pytest.raises(SystemExit):
        gpu.main(["--variants", "fp32,fast"])
    assert "unknown ['fast']" in capsys.readouterr().err
