"""The README stays a true front page: its Python examples run, it stays short, its links lead
somewhere, and it and the docs describe the project as it is, not the story of its making."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_LINES = 150
# Words that tell how the project was made instead of what it is.
STORY_WORDS = [
    r"this session",
    r"previous session",
    r"earlier session",
    r"last session",
    r"issue \d",
    r"not re-measured",
    r"\bstale\b",
    r"\bpreviously\b",
    r"we first tried",
    r"was later fixed",
]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """Each ```python block of a Markdown text, with the line number of its first code line."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        blocks.append((text.count("\n", 0, match.start(1)) + 1, match.group(1)))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_shows_python():
    assert BLOCKS, "the README has no ```python block"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_each_python_block_of_the_readme_runs(
    line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # As a reader runs it from the repository root, but writing into a temporary folder: the
    # folder gets a link to the shipped weights, which the examples load by relative path.
    (tmp_path / "weights").symlink_to(ROOT / "weights", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    # Padded so that a traceback names the README's own line numbers.
    compiled = compile("\n" * (line - 1) + code, str(README), "exec")
    exec(compiled, {"__name__": "__readme__"})


def test_the_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    lines = text.count("\n") + (not text.endswith("\n"))
    assert lines <= MAX_LINES, f"README.md has {lines} lines; keep it to {MAX_LINES}"
    # The YAML front matter makes the repository a Hugging Face Space.
    front, _, _ = text.removeprefix("---\n").partition("\n---\n")
    assert text.startswith("---\n")
    assert "sdk: gradio" in front.splitlines()
    assert "app_file: app.py" in front.splitlines()


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_describe_the_project_not_its_history(page: Path):
    found = [
        f"{page.name}:{number}: {match.group(0)!r}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        for pattern in STORY_WORDS
        for match in re.finditer(pattern, line, flags=re.IGNORECASE)
    ]
    assert not found, "say the date or version instead: " + "; ".join(found)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, - for space."""
    headings = re.findall(r"^#+ (.*)$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_local_links_lead_to_files_and_headings(page: Path):
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    missing = []
    for target in LINK.findall(text):
        path, _, anchor = target.partition("#")
        if re.match(r"[a-z]+:", path):
            continue  # a web address
        file = page.parent / path if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            missing.append(target)
    assert not missing, f"{page.name} links to missing files or headings: {missing}"
