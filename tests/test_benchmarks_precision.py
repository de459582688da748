"""The precision benchmark's code path, on a tiny model."""

from __future__ import annotations

from benchmarks import precision
from tests.test_app import tiny_pipeline


def test_precision_benchmark_times_both_precisions_at_each_batch(tmp_path, capsys, one_thread):
    folder = tmp_path / "tiny"
    tiny_pipeline().save_pretrained(folder)
    precision.main(["--model", str(folder), "--batches", "1,3", "--repeats", "1"])
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.split()[0].isdigit()]
    assert [row[0] for row in rows] == ["1", "3"]
    assert all(float(value) > 0 for row in rows for value in row[1:])
