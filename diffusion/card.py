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

from .autoencoder import VAEConfig
from .device import CPU_BF16_MIN_BATCH
from .files import atomic_write
from .options import guidance_floor


def data_credit(source: str) -> str | None:
    """The data's licence and attribution section from its README, to carry into the card."""
    readme = Path(source) / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text()
    start = text.find("## License")  # "## License and attribution", or "## License" alone
    return text[start:].strip() if start >= 0 else None


def _metrics_section(m: dict, name: str) -> str:
    """The evaluation table of ``python -m diffusion.evaluate --json`` output, and its command.

    One column per palette stage measured (raw model output, training palette, ...), each with
    the generated figure and its ratio to the real reference.
    """
    variants = m.get("variants") or {m.get("palette", "raw"): m}
    seeds = m["seed"] if isinstance(m["seed"], list) else [m["seed"]]
    seed_flag = f"--seeds {','.join(map(str, seeds))}" if len(seeds) > 1 else f"--seed {seeds[0]}"
    floor = m.get("guidance_sigma_min")
    command = (
        f"python -m diffusion.evaluate {name} --data {m['data']} --n {m['n_per_label']} "
        f"--sampler {m['sampler']} --steps {m['steps']} --guidance {m['guidance']} "
        + (f"--guidance-sigma-min {floor:g} " if floor else "")
        + seed_flag
        + (f" --palette {','.join(variants)}" if len(variants) > 1 else "")
    )

    def cell(value: float | None, ratio: float | None = None, se: float | None = None) -> str:
        text = "-" if value is None else f"{value:.3f}"
        text += f" ± {se:.3f}" if se is not None else ""
        return text + (f" ({ratio:.2f}x)" if ratio is not None else "")

    first = next(iter(variants.values()))
    # (row name, where the figures sit in a report, the reference's key and note, with ratio?)
    table = [
        ("label accuracy", ("label_accuracy",), "real_heldout", "held-out", True),
        ("Fréchet distance", ("frechet_distance",), "real_floor", "real floor", True),
        ("near-copy rate", ("near_copy_rate",), "real_heldout", "held-out", False),
    ]
    # The figures that see how a sprite is drawn, with their standard errors (see
    # docs/evaluation.md); reports from before they existed lack them.
    table += [
        (label, (key,), "real_floor", "real floor", False)
        for label, key in (
            ("pattern KID", "kid_patterns"),
            ("pattern Fréchet distance", "frechet_distance_patterns"),
            ("critic accuracy (0.5 = cannot tell)", "c2st_accuracy"),
            ("critic AUC", "c2st_auc"),
        )
        if all(key in v for v in variants.values())
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

    def se(block: dict, key: str) -> float | None:
        return block.get("se", {}).get(key)

    for name, path, ref_key, note, with_ratio in table:
        cells = [
            cell(
                figures(v, path)["generated"],
                figures(v, path)["ratio"] if with_ratio else None,
                se(figures(v, path), "generated"),
            )
            for v in variants.values()
        ]
        ref_block = figures(first, path)
        ref = f"{cell(ref_block[ref_key], se=se(ref_block, ref_key))} ({note})"
        lines.append(f"| {name} | {ref} | " + " | ".join(cells) + " |")
    for v_name, v in variants.items():
        if alpha := v.get("alpha"):
            share, stray = alpha["opaque_share"], alpha["stray_opaque"]
            lines.append(
                f"\nTransparency (palette {v_name}): opaque share per label, generated / real: "
                + ", ".join(
                    f"{k} {share['generated'][k]:.2f} / {share['real_heldout'][k]:.2f}"
                    for k in share["generated"]
                )
                + f" (largest difference {share['max_difference']:.2f}); lone opaque pixels "
                f"{stray['generated']:.4f} / {stray['real_heldout']:.4f}."
            )
            break
    for v_name, v in variants.items():
        if memorised := v["near_copy_rate"].get("memorised"):
            lines.append(
                f"\n**Memorising** (palette {v_name}): near copies of training sprites above the "
                f"held-out sprites' own rate beyond noise in {', '.join(memorised)}; the figures "
                "above are flattered by those copies."
            )
    seed_text = (
        f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"
    )
    return (
        "## Evaluation\n\n"
        f"{m['n_per_label']} sprites per label, {m['sampler']}, {m['steps']} steps, guidance "
        f"{m['guidance']}{guidance_floor(floor, 'sigma')}, "
        f"{seed_text}; generated figures (± one standard error) with their "
        "ratio to the real reference in brackets. The figures are explained in the project's "
        "docs/evaluation.md; a model of transparency is measured composited on white.\n\n"
        + "\n".join(lines)
        + "\n\n"
        f"Measured with `{command}`.\n"
    )


def _text_use(config: dict, name: str) -> str:
    label = "food" if "food" in config["labels"] else config["labels"][0]
    return (
        "**Text**: this model also follows a short description, through the SpriteCLIP text "
        "encoder in `text_encoder/` (its own card says how it was trained and how well it "
        "retrieves):\n\n```python\n"
        f'pipe.generate("{label}", n=16, prompt="red potion", seed=0)\n'
        f'pipe.generate("{label}", prompt="red potion", guide="text")  # guidance follows the '
        "text only\n```\n"
    )


def _text_section(t: dict, name: str, m: dict) -> str:
    """Prompt agreement by SpriteCLIP, from ``python -m diffusion.evaluate --text``."""
    k = t["candidates"]
    rows = [
        f"| {what} | {t[side]['clip_score']:.3f} | {t[side][f'own_of_{k}']:.3f} |"
        for side, what in (
            ("real", "real held-out sprites with their own names"),
            ("generated", "generated from those names (prompt + label)"),
            ("label_only", "generated from the label alone (same seeds)"),
        )
    ]
    return (
        "## Text evaluation\n\n"
        f"{t['prompts']} names of held-out sprites (never seen in training, evenly over labels) "
        f"as prompts, one sprite each, {m['sampler']}, {m['steps']} steps, guidance "
        f"{m['guidance']}, seed {t.get('seed', 0)}, palette {t.get('palette', 'raw')}. "
        "CLIP score: SpriteCLIP's cosine similarity of sprite and prompt; "
        f"own of {k}: how often the prompt is the nearest of {k} names (itself and {k - 1} other "
        f"held-out names; chance {1 / k:.2f}).\n\n"
        f"| sprites | CLIP score | own of {k} |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Examples of the prompts: {', '.join(repr(e) for e in t['examples'])}. Measured with "
        f"`python -m diffusion.evaluate {name} --data {m['data']} --text` (and the flags above)."
        "\n"
    )


def _split_text(split: str) -> str:
    if split == "train":
        return (
            "the evaluator's training split only (`--split train`, 80%): the held-out sprites "
            "it is measured against were never seen"
        )
    return "all of the data, the evaluator's held-out split included, which flatters its scores"


def _kind(model: dict, latent: bool = False) -> str:
    if latent or model.get("in_channels", 3) == 4:
        return "transparent (RGBA, hard alpha; `background=` composites them onto a colour)"
    return "RGB (on white)"


def _totals(training: dict) -> str:
    """Steps and minutes over every run a model continued (``--init``), when there were more."""
    if training.get("total_steps", training.get("steps_done")) == training.get("steps_done"):
        return ""
    return (
        f"; {training['total_steps']} steps and {training['total_minutes']} minutes in all, "
        "counting the runs it continued"
    )


def _latent_text(vae: dict) -> str:
    """What a latent model is, with its autoencoder's figures."""
    m, training = vae["model"], vae.get("training", {})
    side, latent = m["resolution"], VAEConfig.from_dict(m).latent_resolution
    figures = vae.get("reconstruction", {})
    psnr = figures.get("psnr_held_out")
    return (
        f"A latent diffusion model (Rombach et al. 2022): its ContextUnet denoises "
        f"{latent}x{latent} latents of {m['latent_channels']} channels, and the "
        f"decoder of its autoencoder (`autoencoder/`, a SpriteVAE of channels {m['channels']}, "
        f"{training.get('steps', '?')} steps in {training.get('minutes', '?')} minutes"
        + (f"; held-out reconstruction {psnr:.1f} dB PSNR" if psnr else "")
        + f") paints the {side}x{side} sprites. Edits and morphs happen in latent space.\n"
    )


def render_card(
    config: dict, metrics: dict | None = None, name: str = "model", vae: dict | None = None
) -> str:
    """The card's Markdown text; ``vae`` is a latent model's autoencoder config.json."""
    training = config.get("training", {})
    model, schedule = config["model"], config["schedule"]
    sampling = config.get("sampling", {})
    recipe = training.get("recipe", {})
    side = vae["model"]["resolution"] if vae else model["resolution"]
    depth = vae["model"]["in_channels"] if vae else model.get("in_channels", 3)
    # Weights derived from CC-BY art are CC-BY; from public-domain (CC0) art, CC0 like it.
    licence = "cc0-1.0" if "CC0" in (training.get("credit") or "") else "cc-by-4.0"
    front = f"---\nlicense: {licence}\nlibrary_name: sprite-diffusion\ntags:\n- diffusion\n"
    front += "- pixel-art\n- class-conditional\n---\n\n"
    conditioned = "class- and text-conditioned" if model.get("text_dim") else "class-conditioned"
    what = (
        f"A {conditioned} ContextUnet that draws {side}x{side} {_kind(model, bool(vae))} "
        "pixel-art sprites, trained with Sprite Diffusion Studio.\n"
    )
    use = f'images = pipe.generate("{config["labels"][0]}", n=16, seed=0)  # uint8 (n, {side}, '
    if low := model.get("low_res"):
        what = (
            f"A 2x upscaler (SR3, Saharia et al. 2021): a ContextUnet that draws a {side}x{side} "
            f"{_kind(model)} sprite conditioned on a {low}x{low} one, enlarged "
            "nearest-neighbour; trained with Sprite Diffusion Studio on sprites and their "
            "halves (the 2x2 average, or one pixel of each 2x2 block).\n"
        )
        use = (
            f'small = Image.open("sprite{low}.png")  # any {low}x{low} sprite, or uint8 arrays\n'
            f"images = pipe.upscale(small, seed=0)  # uint8 (n, {side}, "
        )
    parts = [
        f"{front}# {Path(name).name}\n",
        what + (_latent_text(vae) if vae else ""),
        f"Labels: {', '.join(config['labels'])}.\n",
        "![samples](samples.png)\n",
        "## Use\n\n```python\n"
        + ("from PIL import Image\n\n" if low else "")
        + "from diffusion import SpritePipeline\n\n"
        f'pipe = SpritePipeline.from_pretrained("{name}")\n'
        f"{use}{side}, {depth})\n"
        "```\n",
        f"Defaults: sampler `{sampling.get('sampler')}`, {sampling.get('steps')} steps, "
        f"guidance {sampling.get('guidance')}"
        + (
            f"{guidance_floor(floor, 'sigma')} (none below it)"
            if (floor := sampling.get("guidance_sigma_min"))
            else ""
        )
        + f", {sampling.get('spacing')} spacing, palette stage "
        f"{sampling.get('palette', 'raw')}, precision {sampling.get('precision', 'fp32')} "
        "(bf16 only where the device has fast bf16; on a CPU, for a batch of "
        f"{CPU_BF16_MIN_BATCH} or more).\n",
        "## Model and training\n",
        f"- network: ContextUnet, channels {model['channels']}, "
        f"{model['blocks_per_level']} residual block(s) per level"
        + (
            f", cross-attention to the prompt's tokens at levels {cross}"
            if (cross := model.get("cross_attention"))
            else ""
        )
        + "\n"
        f"- schedule: {schedule}\n"
        f"- data: `{training.get('data', {}).get('source', '?')}` "
        f"{training.get('data', {}).get('counts', '')}\n"
        f"- data split: {_split_text(recipe.get('split', 'all'))}\n"
        f"- trained {training.get('epochs_done', '?')} epochs / {training.get('steps_done', '?')} "
        f"steps in {training.get('train_minutes', '?')} minutes on "
        f"{training.get('hardware', training.get('device', '?'))}{_totals(training)}\n"
        f"- recipe: {json.dumps(recipe)}\n",
    ]
    if per_sampler := sampling.get("sampler_steps"):
        steps = ", ".join(f"{k} {v}" for k, v in per_sampler.items())
        on = sampling.get("measured_on")
        where = f" on `{on}` (a model this one continues)" if on else ""
        parts.insert(
            6, f"Steps per sampler, measured with `python -m benchmarks.steps`{where}: {steps}.\n"
        )
    if model.get("text_dim"):
        parts.insert(6, _text_use(config, name))
    if note := training.get("note"):
        parts.append(note + "\n")
    if metrics:
        parts.append(_metrics_section(metrics, name))
    if metrics and "text" in metrics:
        parts.append(_text_section(metrics["text"], name, metrics))
    if credit := training.get("credit"):
        parts.append("## Training data credit\n\n" + credit.replace("## ", "### ") + "\n")
    return "\n".join(parts)


def write_model_card(folder: str | os.PathLike) -> Path:
    """(Re)write folder/README.md from its config.json and optional eval.json."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    eval_path = folder / "eval.json"
    metrics = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    vae_path = folder / "autoencoder" / "config.json"
    vae = json.loads(vae_path.read_text()) if config.get("latent") else None
    text = render_card(config, metrics, name=os.fspath(folder), vae=vae)
    return atomic_write(folder / "README.md", text)


SPLIT_NAMES = {"held_out": "held-out (never seen)", "training": "training (the first 720)"}


def write_clip_card(folder: str | os.PathLike) -> Path:
    """(Re)write a SpriteCLIP folder's README.md from its config.json."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    m, training = config["model"], config.get("training", {})
    rows = []
    for split, r in config.get("retrieval", {}).items():
        n, k = r["pairs"], next(key for key in r if key.startswith("of_"))
        rows.append(
            f"| {SPLIT_NAMES.get(split, split)} | {n} | {r['image_to_text']:.3f} "
            f"| {r['text_to_image']:.3f} | {r[k]:.3f} | {1 / n:.4f} / {r['chance_' + k]:.2f} |"
        )
    data = training.get("data", {})
    parts = [
        "---\nlicense: cc-by-4.0\ntags: [clip, pixel-art, sprites]\n---\n",
        f"# SpriteCLIP ({os.fspath(folder)})\n",
        "A small CLIP (Radford et al. 2021) for 16x16 sprites and their short names: a word-piece "
        f"tokenizer ({m['vocab_size']} pieces), a {m['layers']}-layer text transformer "
        f"(width {m['width']}) and a 4-layer CNN, both mapped to unit vectors of "
        f"{m['embed_dim']} dimensions; {training.get('parameters', 0) / 1e6:.2f} M parameters. "
        "It conditions the text-to-sprite diffusion model and scores its prompts.\n",
        f"Trained with `python -m diffusion.text --data {data.get('source')} --out "
        f"{os.fspath(folder)} --epochs {training.get('recipe', {}).get('epochs')}` on "
        f"{data.get('pairs')} (sprite, name) pairs of the evaluator's training split "
        f"({training.get('train_minutes')} minutes on one CPU thread, beside other work); "
        "the held-out scores are on pairs it never saw.\n",
        "## Retrieval (top-1 accuracy)\n",
        "| pairs | n | image -> text (all names) | text -> image (all sprites) | name among 20 "
        "| chance |\n|---|---|---|---|---|---|",
        *rows,
        "",
        "Near-misses count as misses: the held-out names include 'dark brick wall nw' beside "
        "'dark brick wall ne', which a 16x16 picture barely tells apart.\n",
    ]
    if credit := training.get("credit"):
        parts.append("## Training data credit\n\n" + credit.replace("## ", "### ") + "\n")
    return atomic_write(folder / "README.md", "\n".join(parts))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m diffusion.card", description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    print(write_model_card(p.parse_args(argv).folder))


if __name__ == "__main__":
    main()
