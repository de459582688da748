"""The GPU benchmark's code path, run on the CPU: the same code with another device."""

from __future__ import annotations

import json

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
    fp32 = figures["models"]["tiny"]["fp32"]
    assert set(figures["models"]["tiny"]) == {"fp32"}  # compile and graphs are CUDA-only
    assert set(fp32["sprites_per_s"]) == {"1", "3"} and all(
        r > 0 for r in fp32["sprites_per_s"].values()
    )
    assert 0 < fp32["first_frame_s"] < fp32["gif_s"]
