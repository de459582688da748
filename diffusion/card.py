"""Model cards: the README.md that makes a model folder understandable on its own (and on the Hub).

Built from the folder's config.json (model, schedule, labels, training recipe, data credit) and,
when present, eval.json as written by ``python -m diffusion.evaluate MODEL --json``.
Refresh a card after evaluating with ``python -m diffusion.card MODEL_FOLDER``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _metrics_section(m: dict, name: str) -> str:
    """The evaluation table of ``python -m diffusion.evaluate --json`` output, and its command.

    One column per palette stage measured (raw model output, training palette, ...), each with
    the generated figure and its ratio to the real reference.
    """
    variants = m.get("variants") or {m.get("palette", "raw"): m}
    seeds = m["seed"] if isinstance(m["seed"], list) else [m["seed"]]
    seed_flag = f"--seeds {','.join(map(str, seeds))}" if len(seeds) > 1 else f"--seed {seeds[0]}"
    command = (
        f"python -m diffusion.evaluate {name} --data {m['data']} --n {m['n_per_label']} "
        f"--sampler {m['sampler']} --steps {m['steps']} --guidance {m['guidance']} {seed_flag}"
        + (f" --palette {','.join(variants)}" if len(variants) > 1 else "")
    )

    def cell(value: float | None, ratio: float | None = None) -> str:
        text = "-" if value is None else f"{value:.3f}"
        return text + (f" ({ratio:.2f}x)" if ratio is not None else "")

    first = next(iter(variants.values()))
    # (row name, where the figures sit in a report, the reference's key and note, with ratio?)
    table = [
        ("label accuracy", ("label_accuracy",), "real_heldout", "held-out", True),
        ("Fréchet distance", ("frechet_distance",), "real_floor", "real floor", True),
        ("near-copy rate", ("near_copy_rate",), "real_heldout", "held-out", False),
    ]
    if all("crispness" in v for v in variants.values()):
        table += [
            (name, ("crispness", key), "real_heldout", "held-out", True)
            for name, key in (
                ("colours per sprite", "colours_per_sprite"),
                ("flat neighbour pairs", "flat_pairs"),
                ("distance to palette", "palette_distance"),
            )
        ]

    def figures(report: dict, path: tuple[str, ...]) -> dict:
        for key in path:
            report = report[key]
        return report

    head = "| metric | real reference | " + " | ".join(f"palette {k}" for k in variants) + " |"
    lines = [head, "|---|---|" + "---|" * len(variants)]
    for name, path, ref_key, note, with_ratio in table:
        cells = [
            cell(figures(v, path)["generated"], figures(v, path)["ratio"] if with_ratio else None)
            for v in variants.values()
        ]
        ref = f"{cell(figures(first, path)[ref_key])} ({note})"
        lines.append(f"| {name} | {ref} | " + " | ".join(cells) + " |")
    seed_text = (
        f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"
    )
    return (
        "## Evaluation\n\n"
        f"{m['n_per_label']} sprites per label, {m['sampler']}, {m['steps']} steps, guidance "
        f"{m['guidance']}, {seed_text}; generated figures with their ratio to the real "
        "reference in brackets:\n\n" + "\n".join(lines) + "\n\n"
        f"Measured with `{command}`.\n"
    )


def _split_text(split: str) -> str:
    if split == "train":
        return (
            "the evaluator's training split only (`--split train`, 80%): the held-out sprites "
            "it is measured against were never seen"
        )
    return "all of the data, the evaluator's held-out split included, which flatters its scores"


def render_card(config: dict, metrics: dict | None = None, name: str = "model") -> str:
    """The card's Markdown text."""
    training = config.get("training", {})
    model, schedule = config["model"], config["schedule"]
    sampling = config.get("sampling", {})
    recipe = training.get("recipe", {})
    front = "---\nlicense: cc-by-4.0\nlibrary_name: sprite-diffusion\ntags:\n- diffusion\n"
    front += "- pixel-art\n- class-conditional\n---\n\n"
    parts = [
        f"{front}# {Path(name).name}\n",
        f"A class-conditioned ContextUnet that draws {model['resolution']}x{model['resolution']} "
        f"pixel-art sprites, trained with Sprite Diffusion Studio.\n",
        f"Labels: {', '.join(config['labels'])}.\n",
        "![samples](samples.png)\n",
        "## Use\n\n```python\nfrom diffusion import SpritePipeline\n\n"
        f'pipe = SpritePipeline.from_pretrained("{name}")\n'
        f'images = pipe.generate("{config["labels"][0]}", n=16, seed=0)  # uint8 (16, H, W, 3)\n'
        "```\n",
        f"Defaults: sampler `{sampling.get('sampler')}`, {sampling.get('steps')} steps, "
        f"guidance {sampling.get('guidance')}, {sampling.get('spacing')} spacing.\n",
        "## Model and training\n",
        f"- network: ContextUnet, channels {model['channels']}, "
        f"{model['blocks_per_level']} residual block(s) per level\n"
        f"- schedule: {schedule}\n"
        f"- data: `{training.get('data', {}).get('source', '?')}` "
        f"{training.get('data', {}).get('counts', '')}\n"
        f"- data split: {_split_text(recipe.get('split', 'all'))}\n"
        f"- trained {training.get('epochs_done', '?')} epochs / {training.get('steps_done', '?')} "
        f"steps in {training.get('train_minutes', '?')} minutes on {training.get('device', '?')}\n"
        f"- recipe: {json.dumps(recipe)}\n",
    ]
    if note := training.get("note"):
        parts.append(note + "\n")
    if metrics:
        parts.append(_metrics_section(metrics, name))
    if credit := training.get("credit"):
        parts.append("## Training data credit\n\n" + credit.replace("## ", "### ") + "\n")
    return "\n".join(parts)


def write_model_card(folder: str | os.PathLike) -> Path:
    """(Re)write folder/README.md from its config.json and optional eval.json."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    eval_path = folder / "eval.json"
    metrics = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    path = folder / "README.md"
    path.write_text(render_card(config, metrics, name=os.fspath(folder)))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffusion.card", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    print(write_model_card(p.parse_args(argv).folder))


if __name__ == "__main__":
    main()
