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
    """The evaluation table of ``python -m diffusion.evaluate --json`` output, and its command."""
    acc, fd, copies = m["label_accuracy"], m["frechet_distance"], m["near_copy_rate"]
    command = (
        f"python -m diffusion.evaluate {name} --data {m['data']} --n {m['n_per_label']} "
        f"--sampler {m['sampler']} --steps {m['steps']} --guidance {m['guidance']} "
        f"--seed {m['seed']}"
    )
    return (
        "## Evaluation\n\n"
        f"{m['n_per_label']} sprites per label, {m['sampler']}, {m['steps']} steps, guidance "
        f"{m['guidance']}, seed {m['seed']}:\n\n"
        "| metric | generated | real reference | ratio |\n|---|---|---|---|\n"
        f"| label accuracy | {acc['generated']:.3f} | {acc['real_heldout']:.3f} (held-out) "
        f"| {acc['ratio']:.2f} |\n"
        f"| Fréchet distance | {fd['generated']:.3f} | {fd['real_floor']:.3f} (real floor) "
        f"| {fd['ratio']:.2f} |\n"
        f"| near-copy rate | {copies['generated']:.3f} | {copies['real_heldout']:.3f} (held-out) "
        "| |\n\n"
        f"Measured with `{command}`.\n"
    )


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
