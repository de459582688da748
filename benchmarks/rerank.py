"""Best of N: what drawing N candidates per sprite and keeping SpriteCLIP's favourite buys.

    python -m benchmarks.rerank --data ../shared/data/dawnlike16 [--model weights/sprites16-text]
        [--rerank 1,2,4,8] [--per-prompt 4] [--seed 0] [--guidance-text 3] [--json FILE]

For every N, the class-naming prompts of ``diffusion.evaluate`` (``CLASS_PROMPTS``) are drawn
without a label, ``--per-prompt`` sprites each, best of N (``rerank=N``), with the model's
sampler and steps. Two judges: the evaluator's classifier, which the reranking never sees (the
share of sprites it assigns to the label the prompt names), and SpriteCLIP, the reranker itself
(its score, and how often a sprite's own prompt is the nearest of all prompts), which rises by
construction. The seconds are those of drawing the prompted sprites, per sprite kept; the last
column is what each step up in N buys in classifier share per extra second of a sprite.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusion import SpritePipeline
from diffusion.data import load_dataset
from diffusion.evaluate import evaluate_prompts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rerank", description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="weights/sprites16-text")
    parser.add_argument("--rerank", default="1,2,4,8", help="the N to measure, comma-separated")
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance-text", type=float, help="the prompt's own guidance scale")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    pipe = SpritePipeline.from_pretrained(args.model)
    data = load_dataset(args.data)
    options = {} if args.guidance_text is None else {"guidance_text": args.guidance_text}
    rows = []
    print(f"{'N':>3} {'s/sprite':>9} {'class share':>12} {'clip score':>11} {'own prompt':>11}"
          f" {'share/s':>8}")  # fmt: skip
    for n in (int(x) for x in args.rerank.split(",")):
        report = evaluate_prompts(
            pipe, data, per_prompt=args.per_prompt, seed=args.seed, no_prompt=False,
            rerank=n, **options,
        )  # fmt: skip
        own = next(v for k, v in report.items() if k.startswith("own_of_"))
        row = {
            "rerank": n,
            "seconds_per_sprite": report["seconds_per_sprite"],
            "share": report["share"],
            "clip_score": report["clip_score"],
            "own_prompt": own,
        }
        gain = ""
        if rows:
            extra = row["seconds_per_sprite"] - rows[-1]["seconds_per_sprite"]
            gain = f"{(row['share'] - rows[-1]['share']) / extra:+8.3f}" if extra > 0 else ""
        rows.append(row)
        print(f"{n:>3} {row['seconds_per_sprite']:>9.3f} {row['share']:>12.3f} "
              f"{row['clip_score']:>11.3f} {own:>11.3f} {gain:>8}", flush=True)  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
