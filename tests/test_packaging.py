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


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    import ast

    graph: dict[str, set[str]] = {}
    for path in (ROOT / "diffusion").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = ".".join(parts[:-1])
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(filter(None, [base, node.module or ""]))
                found |= {module} | {f"{module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = found
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    # A package's __init__ re-exports its modules; an edge into it from its own module is not
    # a circle of concepts, so only cycles among modules count.
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            if module.startswith(dep + ".") or dep.startswith(module + "."):
                continue  # a package and its own modules
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*trail, module, dep]))
            if dep not in state:
                visit(dep, [*trail, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
