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
        "near_copy_rate": {"generated": 0.01, "real_heldout": 0.05},
    }  # fmt: skip
    (folder / "eval.json").write_text(json.dumps(metrics))
    card = write_model_card(folder).read_text()
    assert card.startswith("---\nlicense: cc-by-4.0")
    assert "| Fréchet distance | 1.500 | 0.750 (real floor) | 2.00 |" in card
    assert "| label accuracy | 0.950 | 0.870 (held-out) | 1.09 |" in card
    assert f"python -m diffusion.evaluate {folder} --data data/toy --n 100" in card
    assert "Art by Someone" in card and "trained 7 epochs" in card
