"""Fewest steps per sampler at the quality of its best: the evidence for the models' defaults.

    python -m benchmarks.steps --data ../shared/data/dawnlike16 [--model weights/sprites16]
        [--out runs/steps.jsonl] [--write]

For every (sampler, steps) of the grid, ``diffusion.evaluate`` measures the Frechet ratio and
crispness (mean of seeds 0, 1, 2; the model's palette stage, and raw). A step count is "within
noise" of the sampler's best when its Frechet ratio and colours ratio are no worse than the
best's by more than two standard errors of the per-seed differences (the seeds are paired: the
same seed starts every step count from the same noise), or by less than MARGIN of the best's
value: paired seeds resolve differences of 1%, smaller than anyone would see or than the
estimate moves between seeds (0.2-0.8 in the Frechet ratio). The fewest such steps is the choice;
``--write`` stores the choices in the model's config.json (``sampling.sampler_steps``, and
``sampling.steps`` for the default sampler). Results are appended to ``--out`` as they come, so
a stopped run resumes where it was.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from diffusion import SpritePipeline, render
from diffusion.data import load_dataset
from diffusion.evaluate import evaluate_palettes
from diffusion.files import atomic_write

GRID = {
    "dpmpp_2m": [6, 8, 10, 14, 20],
    "ddim": [10, 15, 25],
    "plms": [10, 15, 25],
    "lms": [10, 15, 25],
    "euler_ancestral": [15, 30],
    "heun": [5, 8, 15],
}
SEEDS = [0, 1, 2]
METRICS = ("frechet_ratio", "colours_ratio")
MARGIN = 0.02


def measure(pipe: SpritePipeline, data, sampler: str, steps: int, palette) -> dict:
    reports = evaluate_palettes(
        pipe, data, [palette, None], sampler=sampler, steps=steps, seed=SEEDS
    )
    row = {"sampler": sampler, "steps": steps}
    for name, report in reports.items():
        row[name] = {
            "per_seed": {
                str(s): {m: report["per_seed"][str(s)][m] for m in METRICS} for s in SEEDS
            },
            "frechet_ratio": report["frechet_distance"]["ratio"],
            "colours_ratio": report["crispness"]["colours_per_sprite"]["ratio"],
            "flat_ratio": report["crispness"]["flat_pairs"]["ratio"],
            "label_accuracy": report["label_accuracy"]["generated"],
            "generate_s": report["seconds"]["generate"],
        }
    return row


def within_noise(row: dict, best: dict, stage: str) -> bool:
    """Not worse than ``best`` by more than 2 standard errors of the paired seed differences,
    or by less than MARGIN of the best's value."""
    for metric in METRICS:
        diffs = [
            row[stage]["per_seed"][s][metric] - best[stage]["per_seed"][s][metric]
            for s in best[stage]["per_seed"]
        ]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        if statistics.mean(diffs) > max(2 * se, MARGIN * best[stage][metric]):
            return False
    return True


def choose(rows: list[dict], stage: str) -> dict[str, int]:
    chosen = {}
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = sorted((r for r in rows if r["sampler"] == sampler), key=lambda r: r["steps"])
        best = min(mine, key=lambda r: r[stage]["frechet_ratio"])
        chosen[sampler] = next(r["steps"] for r in mine if within_noise(r, best, stage))
    return chosen


def table(rows: list[dict], stage: str, chosen: dict[str, int]) -> str:
    lines = [
        "| sampler | steps | Frechet ratio | colours ratio | flat ratio | label acc | raw Frechet "
        "| raw colours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, raw = r[stage], r["raw"]
        mark = " **chosen**" if chosen.get(r["sampler"]) == r["steps"] else ""
        lines.append(
            f"| {r['sampler']} | {r['steps']}{mark} | {s['frechet_ratio']:.2f} "
            f"| {s['colours_ratio']:.2f} | {s['flat_ratio']:.2f} | {s['label_accuracy']:.3f} "
            f"| {raw['frechet_ratio']:.2f} | {raw['colours_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="weights/sprites16")
    p.add_argument("--out", type=Path, default=Path("runs/steps.jsonl"))
    p.add_argument("--samplers", nargs="+", default=list(GRID), choices=list(GRID))
    p.add_argument("--write", action="store_true", help="store the choices in the model config")
    args = p.parse_args()
    pipe = SpritePipeline.from_pretrained(args.model)
    palette = pipe.defaults.get("palette")
    stage = render.palette_name(palette)
    data = load_dataset(args.data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in args.out.open()] if args.out.exists() else []
    for sampler in args.samplers:
        for steps in GRID[sampler]:
            if any(r["sampler"] == sampler and r["steps"] == steps for r in done):
                continue
            row = measure(pipe, data, sampler, steps, palette)
            done.append(row)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{sampler} {steps}: {row[stage]['frechet_ratio']:.3f}", flush=True)
    rows = sorted(
        (r for r in done if r["sampler"] in args.samplers),
        key=lambda r: (list(GRID).index(r["sampler"]), r["steps"]),
    )
    chosen = choose(rows, stage)
    print(f"palette stage {stage!r}, bf16 {pipe.bf16}, seeds {SEEDS}\n")
    print(table(rows, stage, chosen))
    print("\nchosen:", chosen)
    if args.write:
        path = Path(args.model) / "config.json"
        config = json.loads(path.read_text())
        sampling = config["sampling"]
        sampling["sampler_steps"] = chosen
        sampling["steps"] = chosen.get(sampling["sampler"], sampling["steps"])
        atomic_write(path, json.dumps(config, indent=2))
        print("wrote", path)


if __name__ == "__main__":
    main()
