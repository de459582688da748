import json

from diffusion.card import write_model_card


def test_card_carries_metrics_command_and_credit(tiny_pipe, tmp_path):
    folder = tmp_path / "sprites"
    credit = "## License and attribution\n\nArt by Someone, CC-BY 4.0."
    tiny_pipe.save_pretrained(folder, extra={"training": {"credit": credit, "epochs_done": 7}})
    metrics = {
        "data": "data/toy", "n_per_label": 100, "sampler": "dpmpp_2m", "steps": 20,
        "guidance": 2.5, "seed": 0,
        "label_accuracy": {"generated": 0.95, "real_heldout": 0.87, "ratio": 1.092},
        "frechet_distance": {"generated": 1.5, "real_floor": 0.75, "ratio": 2.0},
        "near_copy_rate": {"generated": 0.2, "real_heldout": 0.05, "memorised": ["food"]},
    }  # fmt: skip
    (folder / "eval.json").write_text(json.dumps(metrics))
    card = write_model_card(folder).read_text()
    assert card.startswith("---\nlicense: cc-by-4.0")
    assert "| Fréchet distance | 0.750 (real floor) | 1.500 (2.00x) |" in card
    assert "| label accuracy | 0.870 (held-out) | 0.950 (1.09x) |" in card
    assert f"python -m diffusion.evaluate {folder} --data data/toy --n 100" in card
    assert "Art by Someone" in card and "trained 7 epochs" in card
    assert "held-out split included" in card  # no split in the recipe: all of the data
    assert "**Memorising** (palette raw): near copies" in card and "beyond noise in food;" in card


def test_card_shows_crispness_for_each_palette_stage(tiny_pipe, tmp_path):
    folder = tmp_path / "crisp"
    tiny_pipe.save_pretrained(folder, extra={"training": {"recipe": {"split": "train"}}})

    def report(palette, colours, flat):
        return {
            "data": "d", "n_per_label": 100, "sampler": "dpmpp_2m", "steps": 20,
            "guidance": 2.0, "seed": [0, 1, 2], "palette": palette,
            "label_accuracy": {"generated": 0.9, "real_heldout": 0.9, "ratio": 1.0},
            "frechet_distance": {"generated": 1.2, "real_floor": 1.0, "ratio": 1.2},
            "near_copy_rate": {"generated": 0.0, "real_heldout": 0.05},
            "crispness": {
                "colours_per_sprite": {"generated": colours, "real_heldout": 9.0,
                                       "ratio": colours / 9},
                "flat_pairs": {"generated": flat, "real_heldout": 0.6, "ratio": flat / 0.6},
                "palette_distance": {"generated": 2.0, "real_heldout": 0.0, "ratio": None},
            },
        }  # fmt: skip

    raw, data = report("raw", 27.0, 0.45), report("data", 9.9, 0.6)
    (folder / "eval.json").write_text(json.dumps({**raw, "variants": {"raw": raw, "data": data}}))
    card = write_model_card(folder).read_text()
    assert "| metric | real reference | palette raw | palette data |" in card
    assert "| colours per sprite | 9.000 (held-out) | 27.000 (3.00x) | 9.900 (1.10x) |" in card
    assert "| flat neighbour pairs | 0.600 (held-out) | 0.450 (0.75x) | 0.600 (1.00x) |" in card
    assert "mean of seeds 0, 1, 2" in card and "--seeds 0,1,2 --palette raw,data" in card
    assert "--guidance 2.0 --seeds" in card and "above noise level" not in card
    assert "training split only" in card
    assert "Memorising" not in card
    # Measured with guidance stopping at a noise level: the card says so, and its command too.
    floored = {**raw, "guidance_sigma_min": 1.0}
    (folder / "eval.json").write_text(json.dumps({**floored, "variants": {"raw": floored}}))
    card = write_model_card(folder).read_text()
    assert "20 steps, guidance 2.0 above noise level sigma 1, mean of seeds" in card
    assert "--guidance 2.0 --guidance-sigma-min 1 --seeds 0,1,2" in card


def test_data_credit_is_the_readmes_licence_section(tmp_path):
    from diffusion.card import data_credit

    text = "# tiles\n\n## Files\n\nx\n\n## License\n\nCC0, credit us.\n"
    (tmp_path / "README.md").write_text(text)
    assert data_credit(str(tmp_path)) == "## License\n\nCC0, credit us."
    (tmp_path / "README.md").write_text("# tiles\n\nno licence here\n")
    assert data_credit(str(tmp_path)) is None
