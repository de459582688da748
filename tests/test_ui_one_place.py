"""Each fact of the app in one place: the package's limits and defaults, not copies of them,
and modules whose imports point one way (tabs -> run, studio, ... -> diffusion)."""

from __future__ import annotations

import ast
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

import app
from diffusion import SAMPLERS, ContextUnet, Schedule, SpritePipeline, UnetConfig
from diffusion import options as package_options
from diffusion.options import MAX_GUIDANCE, MAX_RESAMPLE
from tests.test_app import LABELS, editor_value, tiny_pipeline
from ui import generate as gen
from ui import run as uirun
from ui.compare import CompareTab
from ui.edit import EditTab
from ui.generate import GenerateTab
from ui.morph import MorphTab
from ui.storage import OutputStore
from ui.studio import Studio

UI = Path(__file__).resolve().parent.parent / "ui"
TABS = {"generate", "edit", "morph", "forward", "compare", "guidance", "toy"}
TOP = TABS | {"api"}  # the tabs and the API-only endpoint: the shell's, imported by nothing else
# What each shared module may import from ui/: only what sits below it.
BELOW = {
    "limits": set(),
    "widgets": set(),
    "shell": set(),
    "errors": {"limits"},
    "sessions": {"limits", "errors"},
    "gate": {"limits", "errors", "sessions"},
    "storage": {"limits"},
    "studio": {"limits", "errors", "sessions", "storage"},
    "run": {"limits", "errors", "sessions", "storage", "studio"},
}


def ui_imports(path: Path) -> set[str]:
    """The ui modules ``path`` imports (``from .x import`` and ``from . import x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ui."):
            found.add(node.module.split(".")[1])
    return found


def test_no_tab_imports_another_and_every_arrow_points_down():
    assert not (UI / "context.py").exists()
    modules = {p.stem: p for p in UI.glob("*.py") if p.stem != "__init__"}
    assert set(modules) == TOP | set(BELOW)
    for name, path in modules.items():
        imported = ui_imports(path)
        if name in TOP:
            assert not imported & TOP, f"{name} imports the tab(s) {imported & TOP}"
        else:
            assert imported <= BELOW[name], f"{name} imports {imported - BELOW[name]}"


def test_no_ui_module_keeps_its_own_copy_of_a_package_limit():
    owned = {
        node.targets[0].id
        for node in ast.parse(Path(package_options.__file__).read_text()).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    assert {"MAX_SEED", "MAX_GUIDANCE", "MAX_RESAMPLE"} <= owned
    for path in UI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                assert not names & owned, f"{path.name} defines {names & owned} again"


def custom_pipeline() -> SpritePipeline:
    """A model whose config names its own sampler (by its old name), steps, guidance and
    palette, and measured steps for two other samplers."""
    torch.manual_seed(0)
    config = UnetConfig(num_labels=len(LABELS), channels=(8, 16), emb_dim=16, groups=4, T=100)
    defaults = {"sampler": "pndm", "steps": 33, "guidance": 4.5, "palette": "data",
                "sampler_steps": {"heun": 7, "ddim": 12}}  # fmt: skip
    pipe = SpritePipeline(
        ContextUnet(config), Schedule.linear(100), LABELS, device="cpu", defaults=defaults
    )
    pipe.palette = np.array([[255, 255, 255], [20, 12, 28]], np.uint8)
    return pipe


def test_every_default_comes_from_the_model(tmp_path: Path):
    pipe = custom_pipeline()
    demo = app.build_demo({"custom": pipe}, OutputStore(tmp_path / "out"))
    tabs = {type(t).__name__: t for t in demo.tabs}
    generate, edit = tabs["GenerateTab"], tabs["EditTab"]
    morph, compare = tabs["MorphTab"], tabs["CompareTab"]
    # "pndm" is now called "plms": the dropdowns show the name they list.
    assert (generate.sampler.value, generate.steps.value) == ("plms", 33)
    assert (generate.guidance.value, generate.palette.value) == (4.5, "data")
    assert (edit.sampler.value, edit.steps.value, edit.guidance.value) == ("plms", 33, 4.5)
    assert (morph.sampler.value, morph.steps.value, morph.guidance.value) == ("plms", 33, 4.5)
    assert compare.samplers.value[0] == "plms" and compare.guidance.value == 4.5
    assert "recommended plms, 33 steps, guidance 4.5." in app.model_info("custom", pipe)
    pipe.defaults["guidance_sigma_min"] = 1.5
    assert "guidance 4.5 above noise level σ 1.5." in app.model_info("custom", pipe)
    pipe.defaults["guidance_sigma_min"] = 0.0
    # Examples may name other samplers, with the model's steps for them and its guidance.
    rows = {row[1]: row for row in gen.example_rows(pipe)}
    assert rows["plms"][2:4] == [33, 4.5] and rows["ddim"][2:4] == [12, 4.5]
    assert rows["heun"][2] == 7
    assert rows["euler_ancestral"][2] == SAMPLERS["euler_ancestral"].default_steps
    # Picking a sampler by hand brings the same steps.
    assert generate.on_sampler("ddim", "custom", 4)[generate.steps] == 12
    assert morph.on_sampler("heun", "custom")[morph.steps] == 7


def test_validation_says_what_the_package_allows(pipe: SpritePipeline, tmp_path: Path):
    args = {"label": "hero", "sampler": "ddim", "steps": 10, "seed": 0, "n": 1}
    assert uirun.validate_request(pipe, guidance=MAX_GUIDANCE, **args).guidance == MAX_GUIDANCE
    with pytest.raises(gr.Error, match=f"Guidance must be a number from 0 to {MAX_GUIDANCE:g}"):
        uirun.validate_request(pipe, guidance=MAX_GUIDANCE + 0.5, **args)
    studio = Studio({"tiny": pipe}, OutputStore(tmp_path / "out"))
    with pytest.raises(gr.Error, match=f"Guidance must be a number from 0 to {MAX_GUIDANCE:g}"):
        list(MorphTab(studio).morph("hero", 1, "food", 2, 3, "ddim", 2, MAX_GUIDANCE + 0.5))
    brushed = np.zeros((16, 16), bool)
    brushed[:4] = True
    sprite = pipe.generate("hero", n=1, seed=3, steps=2)[0]
    args = (editor_value(sprite, brushed), "hero", 1.0, "ddim", 2, 2.0, 0, 1)
    too_many = f"Resampling must be a whole number from 1 to {MAX_RESAMPLE}"
    with pytest.raises(gr.Error, match=too_many):
        list(EditTab(studio).edit(*args, resample=MAX_RESAMPLE + 1))


def test_the_cost_of_a_run_is_the_packages_formula(pipe: SpritePipeline, monkeypatch):
    # Heun's last step is a single Euler call: 50 steps are 99 calls, 1,584 for 16 sprites.
    work = pipe.options(sampler="heun", steps=50).work(16)
    assert work == 1584
    monkeypatch.setattr(uirun, "MAX_WORK", 1000)
    with pytest.raises(gr.Error, match=f"needs {work:,} sprite-steps"):
        uirun.validate_request(pipe, "hero", "heun", 50, 2.0, 0, 16)


def test_morph_offers_exactly_the_samplers_interpolate_takes(pipe: SpritePipeline, tmp_path):
    studio = Studio({"tiny": pipe}, OutputStore(tmp_path / "out"))
    tab = MorphTab(studio)
    demo = app.build_demo({"tiny": pipe}, OutputStore(tmp_path / "out2"))
    offered = next(t for t in demo.tabs if isinstance(t, MorphTab)).sampler.choices
    offered = [value for _, value in offered]
    for sampler in SAMPLERS:
        if sampler in offered:
            out = list(tab.morph("hero", 1, "food", 2, 2, sampler, 2, 2.0))
            assert out[-1]["status"].startswith("done:"), sampler
        else:
            with pytest.raises(ValueError, match="deterministic sampler"):
                pipe.interpolate(("hero", 1), ("food", 2), frames=2, sampler=sampler, steps=2)
            with pytest.raises(gr.Error, match="deterministic sampler"):
                list(tab.morph("hero", 1, "food", 2, 2, sampler, 2, 2.0))
    assert "euler_ancestral" in offered and "ddpm" not in offered


def test_compare_runs_every_sampler(pipe: SpritePipeline, tmp_path: Path):
    studio = Studio({"tiny": pipe}, OutputStore(tmp_path / "out"))
    last = list(CompareTab(studio).compare("tiny", "hero", list(SAMPLERS), [2], 2.0, 0, 1))[-1]
    assert list(last["table"]["sampler"]) == list(SAMPLERS)


def test_an_old_sampler_name_is_still_accepted(pipe: SpritePipeline, tmp_path: Path):
    studio = Studio({"tiny": pipe}, OutputStore(tmp_path / "out"))
    out = list(GenerateTab(studio).generate("hero", "pndm", 2, 2.0, 0, 1))[-1]
    assert out["status"].startswith("done: 1 × hero · plms · 2 steps")


@pytest.fixture(scope="module")
def pipe() -> SpritePipeline:
    return tiny_pipeline()
