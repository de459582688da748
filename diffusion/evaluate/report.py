"""The evaluation's plain-text tables and its command line (``python -m diffusion.evaluate``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from diffusion import SpritePipeline, render
from diffusion.data import load_dataset
from diffusion.evaluate.classifier import DEFAULT_CACHE
from diffusion.evaluate.driver import (
    UNCERTAIN,
    check_comparable,
    compare,
    evaluate_palettes,
    evaluate_text,
)
from diffusion.evaluate.prompts import evaluate_prompts, format_prompt_report
from diffusion.options import guidance_floor

DESCRIPTION = "Measure a trained sprite model against its data (see diffusion.evaluate)."
# The rows of the table with intervals: (name, report key).
UNCERTAIN_ROWS = (
    ("Frechet distance", "frechet_distance"),
    ("KID", "kid"),
    ("pattern Frechet distance", "frechet_distance_patterns"),
    ("pattern KID", "kid_patterns"),
    ("C2ST accuracy", "c2st_accuracy"),
    ("C2ST AUC", "c2st_auc"),
)


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of an :func:`evaluate` report."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def row(name: str, *values: float | None) -> str:
        return f"{name:<28}" + "".join(f"{num(v):>11}" for v in values)

    def uncertain_row(name: str, metric: str) -> str:
        block = report[metric]
        cells = []
        for fig in ("generated", "real_floor", "ratio"):
            interval = block["ci95"].get(fig) if fig in block else None
            text = "" if fig not in block else num(block[fig])
            if interval is not None:
                text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
            cells.append(f"{text:>26}")
        return f"{name:<28}" + "".join(cells)

    acc, fd, copies = report["label_accuracy"], report["frechet_distance"], report["near_copy_rate"]
    c2st = report["c2st_accuracy"]
    crisp = report["crispness"]
    guidance = "default" if report["guidance"] is None else report["guidance"]
    guidance = f"{guidance}{guidance_floor(report.get('guidance_sigma_min') or 0, 'sigma')}"
    res = report["resolution"]
    seeds = report["seed"]
    seed_text = f"seed {seeds}" if isinstance(seeds, int) else f"mean of seeds {seeds}"
    lines = [
        f"data {report['data']} ({res}x{res}, {len(report['labels'])} labels)",
        (
            f"sampler {report['sampler']}, {report['steps']} steps, guidance {guidance}, "
            f"palette {report.get('palette', 'raw')}, {seed_text}, "
            f"{report['n_per_label']} per label"
        ),
        "",
        f"{'metric':<28}{'generated':>11}{'real':>11}{'ratio':>11}",
        row("label accuracy", acc["generated"], acc["real_heldout"], acc["ratio"]),
        row("Frechet distance", fd["generated"], fd["real_floor"], fd["ratio"]),
        row("near-copy rate", copies["generated"], copies["real_heldout"]),
        *(
            row(name, c["generated"], c["real_heldout"], c["ratio"])
            for name, c in (
                ("colours per sprite", crisp["colours_per_sprite"]),
                ("flat neighbour pairs", crisp["flat_pairs"]),
                ("distance to palette", crisp["palette_distance"]),
            )
        ),
        "",
        "with 95% intervals (lower is better; the floor is real training against held-out sprites)",
        f"{'metric':<28}{'generated':>26}{'real floor':>26}{'ratio':>26}",
        *(uncertain_row(name, metric) for name, metric in UNCERTAIN_ROWS),
        (
            f"(C2ST: {c2st['folds']:.0f}-fold held-out figures of a critic telling "
            f"{c2st['per_side']:.0f} sprites from as many held-out ones, chance 0.5; "
            "patterns: 3x3 pixel-pattern histograms)"
        ),
        "",
        f"{'label':<28}{'acc gen':>11}{'acc real':>11}{'copy gen':>11}{'copy real':>11}"
        f"{'critic':>11}",
    ]
    for name, r in report["per_label"].items():
        values = (r["accuracy_generated"], r["accuracy_real"])
        values += (r["near_copy_generated"], r["near_copy_real"], r.get("critic_accuracy"))
        lines.append(row(name, *values))
    lines.append(
        f"(chance accuracy {num(acc['chance'])}; real accuracy is on the held-out split; "
        "the Frechet floor compares training with held-out sprites; critic: the C2ST accuracy "
        "on the label's sprites, 0.5 where it cannot tell them from real ones)"
    )
    if memorised := copies.get("memorised"):
        lines.append(
            "MEMORISING: more near copies than the held-out sprites beyond noise in "
            + ", ".join(memorised)
            + " (the figures above are flattered by copies)"
        )
    if alpha := report.get("alpha"):
        share = alpha["opaque_share"]
        lines.append("transparency (composited on white above): opaque share per label")
        for name, value in share["generated"].items():
            lines.append(row(f"  {name}", value, share["real_heldout"][name]))
        lines.append(row("  largest difference", share["max_difference"]))
        stray = alpha["stray_opaque"]
        lines.append(row("lone opaque pixels", stray["generated"], stray["real_heldout"]))
    if len(report.get("per_seed", {})) > 1:
        keys = ("frechet_ratio", "colours_ratio", "flat_pairs_ratio", "frechet_patterns_ratio")
        keys += ("kid_patterns", "c2st_accuracy", "c2st_auc")
        lines.append(
            "per seed: Frechet ratio / colours ratio / flat-pairs ratio / pattern Frechet ratio"
            " / pattern KID / C2ST accuracy / C2ST AUC"
        )
        for seed, figures in report["per_seed"].items():
            lines.append(f"  {seed}: " + " / ".join(num(figures[k]) for k in keys))
    return "\n".join(lines)


def format_text_report(report: dict[str, Any]) -> str:
    k = report["candidates"]
    lines = [
        f"text: {report['prompts']} held-out names as prompts, SpriteCLIP score and own prompt "
        f"nearest of {k} (chance {report['chance']:.2f})",
        f"{'':12} {'clip score':>10} {'own of ' + str(k):>10}",
    ]
    for side in ("real", "generated", "label_only"):
        r = report[side]
        lines.append(f"{side:12} {r['clip_score']:10.3f} {r[f'own_of_{k}']:10.3f}")
    return "\n".join(lines)


def _class_prompts(choice: str | None) -> dict[str, list[str]] | None:
    """--prompts: None (the kept list) or a JSON file's {label: [prompts]}."""
    if choice in (None, "kept"):
        return None
    try:
        prompts = json.loads(Path(choice).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--prompts {choice}: not a readable JSON file ({err})") from None
    if not isinstance(prompts, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in prompts.values()
    ):
        raise ValueError(f"--prompts {choice}: expected a JSON object {{label: [prompts]}}")
    return prompts


def format_comparison(
    reports: dict[str, dict[str, Any]], baseline: dict[str, Any], name: str = "baseline"
) -> str:
    """Per palette stage measured in both and per figure with an uncertainty, whether the
    model of ``reports`` (palette name -> report) beats ``baseline`` (a ``--json`` report, its
    other stages under "variants") beyond the noise, by :func:`compare`."""
    theirs = {baseline["palette"]: baseline, **baseline.get("variants", {})}
    lines = [f"against {name} (95%; lower is better; z < 0: this model lower)"]
    for stage, ours in reports.items():
        if stage not in theirs:
            continue
        lines.append(f"palette {stage}")
        for metric in UNCERTAIN:
            c = compare(ours, theirs[stage], metric)
            verdict = {"a": "this model", "b": name, None: "within the noise"}[c["better"]]
            lines.append(
                f"  {metric:<26}{c['a']:>8.3f}{c['b']:>8.3f}   z {c['z']:+6.2f}   {verdict}"
            )
        memorised = {"this model": ours, name: theirs[stage]}
        for side, report in memorised.items():
            if labels := report.get("near_copy_rate", {}).get("memorised"):
                # compare() then declines to call that side better: copies flatter every figure.
                lines.append(f"  {side} memorises {', '.join(labels)}")
    if len(lines) == 1:
        lines.append(f"  no palette stage in common with {name}: measure with its --palette")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m diffusion.evaluate MODEL --data DIR``."""
    parser = argparse.ArgumentParser(prog="python -m diffusion.evaluate", description=DESCRIPTION)
    parser.add_argument("model", help="model folder or Hugging Face Hub id")
    parser.add_argument("--data", required=True, help="dataset folder or hf://datasets/OWNER/NAME")
    parser.add_argument("--n", type=int, default=100, help="generated sprites per label")
    parser.add_argument("--sampler", help="default: the model's")
    parser.add_argument("--steps", type=int, help="default: the model's for the sampler")
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's")
    parser.add_argument(
        "--guidance-sigma-min",
        type=float,
        help="guidance only at noise levels above this sigma (default: the model's)",
    )
    parser.add_argument(
        "--seeds", default="0,1,2", help="evaluation seeds, comma-separated; figures are means"
    )
    parser.add_argument("--seed", type=int, help="a single evaluation seed (replaces --seeds)")
    parser.add_argument(
        "--palette",
        help="palette stages to measure on the same samples, comma-separated: raw, data or a "
        "colour count (e.g. 'raw,data'); the JSON holds the first, and 'variants' all of them "
        "(default: the model's)",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="also score prompts (a text model): SpriteCLIP agreement on held-out names",
    )
    parser.add_argument(
        "--prompts",
        nargs="?",
        const="kept",
        metavar="FILE",
        help="also draw prompts that name a class without a label (a text model) and report "
        "the share the classifier assigns to the named label: the kept list "
        "(diffusion.evaluate.CLASS_PROMPTS), or a JSON file {label: [prompts]}",
    )
    parser.add_argument(
        "--per-prompt", type=int, default=8, help="sprites per prompt for --prompts"
    )
    parser.add_argument(
        "--guidance-text",
        type=float,
        help="the prompt's own guidance scale for --text and --prompts (dual guidance)",
    )
    parser.add_argument(
        "--rerank", type=int, help="best of N candidates per sprite for --text and --prompts"
    )
    parser.add_argument(
        "--text-only",
        action="store_true",
        help="measure only what --text and --prompts ask for, not the label evaluation",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="the network's precision (default: the model's sampling.precision)",
    )
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="EVAL_JSON",
        help="also say, per figure, whether this model beats the one measured in EVAL_JSON (a "
        "--json report of the same data and --n, e.g. weights/sprites16/eval.json) beyond the "
        "noise",
    )
    parser.add_argument(
        "--cache", type=Path, help=f"classifier cache folder (default {DEFAULT_CACHE})"
    )
    args = parser.parse_args(argv)
    try:
        pipe = SpritePipeline.from_pretrained(args.model)
    except (FileNotFoundError, ValueError) as err:  # one line naming the folder, no traceback
        parser.exit(2, f"error: {err}\n")
    if pipe.low_res:
        parser.exit(2, f"error: {args.model} is an upscaler: measure it with benchmarks.upscale\n")
    if args.precision:
        pipe.defaults["precision"] = args.precision
    if args.guidance_sigma_min is not None:
        pipe.defaults["guidance_sigma_min"] = args.guidance_sigma_min
    try:
        seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
        stages = args.palette or render.palette_name(pipe.defaults.get("palette"))
        palettes = [render.parse_palette(p) for p in stages.split(",")]
        # The model's defaults fill what is not given, checked as any sampling call is.
        options = pipe.options(sampler=args.sampler, steps=args.steps, guidance=args.guidance)
        text_options = {"guidance_text": args.guidance_text, "rerank": args.rerank}
        text_options = {k: v for k, v in text_options.items() if v is not None}
        if text_options and not (args.text or args.prompts):
            raise ValueError("--guidance-text and --rerank apply to --text and --prompts only")
        if args.text_only and not (args.text or args.prompts):
            raise ValueError("--text-only needs --text or --prompts")
        if text_options:  # checked as a prompted run of this model, before any sampling
            pipe.options(prompt="a", guidance=args.guidance, **text_options)
        class_prompts = _class_prompts(args.prompts)
        baseline = _baseline(args.against, args.data, args.n)
    except ValueError as err:
        parser.error(str(err))
    args.sampler, args.steps = options.sampler, options.steps
    data = load_dataset(args.data)
    reports: dict[str, dict[str, Any]] = {render.palette_name(palettes[0]): {}}
    if not args.text_only:
        reports = evaluate_palettes(
            pipe,
            data,
            palettes,
            n_per_label=args.n,
            sampler=args.sampler,
            steps=args.steps,
            guidance=args.guidance,
            seed=seeds,
            cache_dir=args.cache,
        )
    print(f"model {args.model}")
    for report in reports.values():
        report["model"] = args.model
        if not args.text_only:
            print(format_report(report) + "\n")
    run = {"sampler": args.sampler, "steps": args.steps, **text_options}
    if args.guidance is not None:
        run["guidance"] = args.guidance
    if args.text:
        text = evaluate_text(pipe, data, seed=seeds[0], palette=palettes[0], **run)
        print(format_text_report(text))
        for report in reports.values():
            report["text"] = text
    if args.prompts:
        measured = evaluate_prompts(
            pipe,
            data,
            prompts=class_prompts,
            per_prompt=args.per_prompt,
            seed=seeds[0],
            cache_dir=args.cache,
            **run,
        )
        print(format_prompt_report(measured))
        for report in reports.values():
            report["class_prompts"] = measured
    if baseline is not None and not args.text_only:
        print(format_comparison(reports, baseline, str(args.against)))
    if args.json is not None:
        first = next(iter(reports.values()))
        if len(reports) > 1:
            first = {**first, "variants": reports}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(first, indent=2) + "\n")
    return 0


def _baseline(path: Path | None, data: str, n: int) -> dict[str, Any] | None:
    """The report of ``--against``, checked before any sampling: a ValueError naming the flag."""
    if path is None:
        return None
    try:
        baseline = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--against {path}: {err}") from None
    if not isinstance(baseline, dict) or "palette" not in baseline:
        raise ValueError(f"--against {path}: not a --json report of python -m diffusion.evaluate")
    try:
        check_comparable({"data": data, "n_per_label": n}, baseline)
    except ValueError as err:
        raise ValueError(f"--against {path}: {err}; measure with the same --data and --n") from None
    return baseline
