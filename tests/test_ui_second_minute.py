"""What a visitor meets in the app's second minute: a sampler's own defaults that run, uploads
that never wipe the sprite, refusals that keep the page, and messages that say what happened."""

from __future__ import annotations

import re
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from diffusion import SAMPLERS, SpritePipeline
from tests.test_app import editor_value, tiny_pipeline, tiny_text_pipeline, wired
from ui import run as uirun
from ui.compare import CompareTab
from ui.edit import EditTab
from ui.forward import ForwardTab
from ui.generate import GenerateTab
from ui.limits import DEFAULT_BATCH, MAX_WORK, UNCONDITIONAL
from ui.morph import MorphTab
from ui.run import OUTPUTS, PROMPT_ALONE
from ui.storage import OutputStore
from ui.studio import Studio

TOO_MANY_PIECES = "a b c d e f g h i j k l m n o p q r"  # 35 characters, 18 word pieces
WIDE_NOTE = "your upload, 100×37: cropped to the 37×37 square in its middle and resized to 16×16"


@pytest.fixture(scope="module")
def pipe() -> SpritePipeline:
    return tiny_pipeline()


@pytest.fixture
def studio(pipe: SpritePipeline, tmp_path: Path) -> Studio:
    return Studio({"tiny": pipe}, OutputStore(tmp_path / "out"))


@pytest.fixture
def text_studio(tmp_path: Path) -> Studio:
    return Studio({"text": tiny_text_pipeline()}, OutputStore(tmp_path / "out"))


# -- a sampler's own defaults run at the default batch -----------------------------------------


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_picking_a_sampler_brings_settings_that_run(sampler: str, tmp_path: Path):
    pipe = tiny_pipeline(T=500)  # long enough for DDPM's own 500 steps
    tab = GenerateTab(Studio({"t500": pipe}, OutputStore(tmp_path / "out")))
    tab.steps, tab.n, tab.eta, tab.sampler_info = "steps", "n", "eta", "info"
    picked = tab.on_sampler(sampler, "t500", DEFAULT_BATCH)
    steps, n = picked["steps"], picked["n"]
    assert steps == pipe.default_steps(sampler)
    req = uirun.validate_request(pipe, "hero", sampler, steps, 2.0, 0, n)  # not refused
    assert req.work <= MAX_WORK
    if n < DEFAULT_BATCH:  # cut to fit, and said where the sampler is picked
        wanted = req.work // n * DEFAULT_BATCH
        assert picked["info"].endswith(
            f"**Batch set to {n}: {DEFAULT_BATCH} sprites × {steps} steps of {sampler} would be "
            f"{wanted:,} sprite-steps, over the limit of {MAX_WORK:,}.**"
        )
    else:
        assert "Batch set" not in picked["info"]
    if sampler == "ddpm":
        assert (steps, n) == (500, 8)


# -- uploads never wipe the sprite ------------------------------------------------------------


def test_edit_keeps_its_sprite_when_an_upload_is_refused(studio: Studio, tmp_path: Path):
    tab = EditTab(studio)
    handler = wired(tab.use_upload, "editor", "status")
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    out = handler("tiny", str(bad))
    # The message, and no new value for the canvas: the current sprite stays.
    assert out == {
        "status": "⚠️ That file is not an image we can read. Upload a PNG (or GIF, JPEG, WebP, BMP)."
    }
    wide = tmp_path / "wide.png"
    Image.new("RGB", (100, 37), (255, 0, 0)).save(wide)
    out = handler("tiny", str(wide))
    assert out["status"] == WIDE_NOTE
    assert out["editor"]["background"].size == (256, 256)


def test_the_editor_takes_no_upload_of_its_own(pipe: SpritePipeline, tmp_path: Path):
    import app

    demo = app.build_demo({"tiny": pipe}, OutputStore(tmp_path / "out"))
    tab = next(t for t in demo.tabs if isinstance(t, EditTab))
    assert list(tab.editor.sources) == []  # every upload goes through the checks above
    assert tab.upload.file_types == [".png", ".gif", ".jpg", ".jpeg", ".webp", ".bmp"]


def test_forward_says_how_an_upload_was_fitted(studio: Studio, tmp_path: Path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (100, 37), (255, 0, 0)).save(wide)
    info = ForwardTab(studio).use_upload("tiny", str(wide))["info"]
    assert info == WIDE_NOTE


# -- refusals keep the page -------------------------------------------------------------------


def test_a_prompt_too_long_in_word_pieces_keeps_the_page(text_studio: Studio):
    message = (
        "⚠️ This prompt cannot be used: a description may be at most 16 word pieces long "
        "(about 5 words), got 18."
    )
    generate = wired(GenerateTab(text_studio).generate, *OUTPUTS)
    out = list(generate("hero", "ddim", 5, 2.0, 0, 2, prompt=TOO_MANY_PIECES))
    assert out == [{"status": message}]  # nothing else sent: every result stays on the page
    pipe = text_studio.pipe("text")
    sprite = pipe.generate("hero", n=1, seed=3, steps=2)[0]
    edit = wired(EditTab(text_studio).edit, *OUTPUTS)
    args = (editor_value(sprite), "hero", 0.5, "ddim", 5, 2.0, 0, 1)
    out = list(edit(*args, prompt=TOO_MANY_PIECES))
    assert out == [{"status": message}]
    morph = wired(MorphTab(text_studio).morph, "status", "gif", "strip", "files")
    out = list(morph("hero", 1, "food", 2, 3, "ddim", 5, 2.0, prompt=TOO_MANY_PIECES))
    assert out == [{"status": message}]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": None}, "Steps for ddim is empty: enter a whole number from 1 to 100."),
        ({"steps": ""}, "Steps for ddim is empty: enter a whole number from 1 to 100."),
        ({"guidance": None}, "Guidance is empty: enter a number from 0 to 10."),
        ({"n": None}, "Batch size is empty: enter a whole number from 1 to 16."),
        ({"mix": "hero:"}, "The weight of 'hero' is empty: enter a number from 0 to 1."),
    ],
)
def test_an_empty_box_is_called_empty(pipe: SpritePipeline, change: dict, message: str):
    args = {"label": "hero", "sampler": "ddim", "steps": 10, "guidance": 2, "seed": 0, "n": 4}
    with pytest.raises(gr.Error) as err:
        uirun.validate_request(pipe, **{**args, **change})
    assert err.value.message == message


# -- the label and the prompt -----------------------------------------------------------------


def test_typing_a_prompt_replaces_the_starting_label(text_studio: Studio):
    tab = GenerateTab(text_studio)
    tab.label, tab.typed = "label", "typed"
    first = tab.on_prompt("red", "", "hero", "text")  # the first letter in an empty box
    assert first["label"]["value"] == UNCONDITIONAL and first["label"]["info"] == PROMPT_ALONE
    assert first["typed"] == "red"
    # A label picked while the prompt is there stays, as does one picked before typing.
    assert "value" not in tab.on_prompt("red potion", "red potio", "hero", "text")["label"]
    assert "value" not in tab.on_prompt("red", "", "food", "text")["label"]
    out = list(tab.generate(UNCONDITIONAL, "ddim", 3, 2.0, 0, 1, prompt="red potion"))[-1]
    assert out["status"].startswith('done: 1 × "red potion" (no label) · ddim')


# -- sprites look the same on every tab -------------------------------------------------------


def palette_pipeline() -> SpritePipeline:
    pipe = tiny_pipeline()
    pipe.defaults["palette"] = "data"
    return pipe


def colours(sprites: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(c) for c in np.asarray(sprites).reshape(-1, 3)}


def test_new_sprites_and_edits_take_the_models_palette(tmp_path: Path):
    pipe = palette_pipeline()
    studio = Studio({"p": pipe}, OutputStore(tmp_path / "out"))
    palette = colours(pipe.palette)
    drawn, info = studio.draw_sprite("p", "item")
    assert colours(drawn) <= palette and info.startswith("an **item**, drawn with")
    assert colours(ForwardTab(studio).draw_sprite("p", "hero")["source"]) <= palette
    edit = EditTab(studio)
    varied = list(edit.edit(editor_value(drawn), "food", 0.6, "ddim", 5, 2.0, 0, 2, model="p"))
    assert colours(varied[-1]["sprites"]) <= palette and "palette data" in varied[-1]["status"]
    brushed = np.zeros((16, 16), bool)
    brushed[4:12] = True
    repainted = list(edit.edit(editor_value(drawn, brushed), "food", 1.0, "ddim", 5, 2.0, 0, 2,
                               model="p"))[-1]  # fmt: skip
    assert colours(repainted["sprites"]) <= palette
    for s in repainted["sprites"]:
        np.testing.assert_array_equal(s[~brushed], drawn[~brushed])
    # A sprite off the palette keeps its pixels exactly; the status says why it is raw.
    raw = pipe.generate("hero", n=1, seed=3, steps=2)[0]
    assert not colours(raw) <= palette
    kept = list(edit.edit(editor_value(raw, brushed), "food", 1.0, "ddim", 5, 2.0, 0, 1,
                          model="p"))[-1]  # fmt: skip
    np.testing.assert_array_equal(kept["sprites"][0][~brushed], raw[~brushed])
    assert "palette raw: snapping would change pixels you left alone" in kept["status"]


def test_a_new_sprite_is_an_item_not_a_item(studio: Studio):
    _, item = studio.draw_sprite("tiny", "item")
    _, hero = studio.draw_sprite("tiny", "hero")
    assert item.startswith("an **item**, drawn with dpmpp_2m in 20 steps, seed ")
    assert hero.startswith("a **hero**, drawn with")


# -- Compare says what it compared, with honest timings --------------------------------------


def test_compare_says_what_it_compared_and_how_long_each_took(studio: Studio):
    last = list(CompareTab(studio).compare("tiny", "hero", ["ddim", "heun"], [2, 5], 2.0, 3, 2))
    status, seconds = last[-1]["status"], last[-1]["table"]["seconds"]
    took = r"(\d+\.\d\d) s"
    found = re.fullmatch(
        "done: 2 × hero, seed 3, guidance 2, through ddim and heun at 2 and 5 steps: "
        f"ddim 2 steps {took}, ddim 5 steps {took}, heun 2 steps {took}, heun 5 steps {took}",
        status,
    )
    assert found, status
    assert np.allclose([float(s) for s in found.groups()], seconds, atol=0.0051)


def test_compare_warms_the_network_before_timing(tmp_path: Path, monkeypatch):
    pipe = tiny_pipeline()
    forward, calls = pipe.model.forward, []

    def slow_first_call(*args, **kwargs):
        if not calls:  # what a first call pays once: allocations, kernel choices
            time.sleep(0.5)
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(pipe.model, "forward", slow_first_call)
    studio = Studio({"tiny": pipe}, OutputStore(tmp_path / "out"))
    table = list(CompareTab(studio).compare("tiny", "hero", ["ddim"], [2, 5], 2.0, 0, 1))[-1]
    first, second = table["table"]["seconds"]
    assert first < 0.5 and first < second  # 2 steps take less time than 5
