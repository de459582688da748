import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

from diffusion import SpritePipeline


def test_sample_command_writes_png_and_gif(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "m")
    cmd = [
        sys.executable,
        "-m",
        "diffusion",
        "sample",
        "--model",
        str(tmp_path / "m"),
        "--label",
        "b",
        "--sampler",
        "ddim",
        "--steps",
        "6",
        "--n",
        "4",
        "--seed",
        "0",
        "--gif",
        str(tmp_path / "b.gif"),
        "--png",
        str(tmp_path / "b.png"),
        "--scale",
        "2",
        "--guidance",
        "3",
        "--guidance-sigma-min",
        "1.0",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    sheet = np.asarray(Image.open(tmp_path / "b.png").convert("RGB"))
    assert sheet.shape == ((2 * 9 - 1) * 2, (2 * 9 - 1) * 2, 3)
    gif = iio.imread(tmp_path / "b.gif", index=None)
    assert gif.shape[0] == 6
    # The sheet shows what the API returns for the same arguments.
    expected = SpritePipeline.from_pretrained(tmp_path / "m").generate(
        "b", n=4, sampler="ddim", steps=6, seed=0, guidance=3.0, guidance_sigma_min=1.0
    )
    np.testing.assert_array_equal(sheet[0:16:2, 0:16:2], expected[0])


def test_sample_command_reports_bad_input(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "m")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffusion",
            "sample",
            "--model",
            str(tmp_path / "m"),
            "--label",
            "dragon",
            "--steps",
            "3",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "unknown label 'dragon'" in done.stderr
    assert "Traceback" not in done.stderr


def test_one_step_and_a_palette(tiny_pipe, tmp_path, capsys):
    from diffusion.__main__ import main

    tiny_pipe.palette = np.array([[255, 255, 255], [0, 0, 0]], np.uint8)
    tiny_pipe.save_pretrained(tmp_path / "m")
    gif, png = tmp_path / "one.gif", tmp_path / "one.png"
    model = ["--model", str(tmp_path / "m"), "--steps", "1", "--n", "2", "--scale", "1"]
    main(["sample", *model, "--gif", str(gif), "--png", str(png), "--palette", "data"])
    assert iio.imread(gif, index=None).shape[0] == 1
    colours = np.unique(np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3), axis=0)
    assert {tuple(c) for c in colours} <= {(255, 255, 255), (0, 0, 0)}


def test_sample_command_takes_the_models_palette_stage_unless_told_raw(tiny_pipe, tmp_path):
    from diffusion.__main__ import main

    tiny_pipe.palette = np.array([[255, 255, 255], [0, 0, 0]], np.uint8)
    tiny_pipe.defaults["palette"] = "data"
    tiny_pipe.save_pretrained(tmp_path / "m")
    model = ["--model", str(tmp_path / "m"), "--steps", "2", "--n", "2", "--scale", "1"]
    sheets = {}
    for name, flags in (("default", []), ("raw", ["--palette", "raw"])):
        png = tmp_path / f"{name}.png"
        main(["sample", *model, "--png", str(png), "--gif", str(tmp_path / f"{name}.gif"), *flags])
        sheets[name] = np.asarray(Image.open(png).convert("RGB"))
    colours = {tuple(c) for c in np.unique(sheets["default"].reshape(-1, 3), axis=0)}
    assert colours <= {(255, 255, 255), (0, 0, 0)}
    raw = SpritePipeline.from_pretrained(tmp_path / "m").generate(None, n=2, steps=2, seed=0)
    assert len(np.unique(raw.reshape(-1, 3), axis=0)) > 2
    side = raw.shape[1]
    np.testing.assert_array_equal(sheets["raw"][:side, :side], raw[0])


def test_sample_command_writes_under_out_not_the_current_folder(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "m")
    work = tmp_path / "work"
    work.mkdir()
    cmd = [sys.executable, "-m", "diffusion", "sample", "--model", str(tmp_path / "m")]
    cmd += ["--label", "a", "--steps", "2", "--n", "1"]
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert sorted(p.name for p in (work / "out").iterdir()) == ["a.gif", "a.png"]
