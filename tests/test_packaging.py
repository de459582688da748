"""The package installs as the README says: its dependencies, its command, its shipped models."""

from __future__ import annotations

import importlib
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_app_requirements_hold_the_package_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = set(requirement_lines("requirements.txt"))
    needed = project["dependencies"] + project["optional-dependencies"]["app"]
    assert [d for d in needed if d not in runtime] == []
    # A Space installs requirements.txt: no test tools there.
    assert not {"pytest", "ruff", "playwright"} & {r.split(">")[0] for r in runtime}


def test_dev_requirements_add_the_test_tools_on_top():
    dev = requirement_lines("requirements-dev.txt")
    assert dev[0] == "-r requirements.txt"
    assert {"pytest", "pytest-timeout", "ruff"} <= {r.split(">")[0] for r in dev[1:]}
    assert (
        "timeout"
        in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    )


def test_the_console_command_is_the_module_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, function = project["scripts"]["sprite-diffusion"].partition(":")
    assert (
        getattr(importlib.import_module(module), function)
        is importlib.import_module("diffusion.__main__").main
    )


def test_every_package_and_the_weights_are_installed():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "diffusion").rglob("__init__.py")
    }
    assert on_disk <= set(setuptools["packages"])
    assert setuptools["package-dir"]["diffusion.weights"] == "weights"
