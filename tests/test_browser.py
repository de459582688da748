"""End-to-end: a real Chromium opens the app, generates, and gets the animation.

Needs Playwright for Python and Debian's chromium at /usr/bin/chromium (``apt-get install -y
chromium``; ``playwright install`` is not used). Skipped with the reason when either is missing.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import app
from tests.test_app import free_port, tiny_pipeline, tiny_text_pipeline

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)

SHOTS = Path(os.environ.get("SCREENSHOTS", tempfile.gettempdir()))

# Records every text the status line shows, so the test can see the live progress stream by.
WATCH_STATUS = """() => {
    window.statuses = [];
    const status = document.querySelector('#status');
    new MutationObserver(() => window.statuses.push(status.innerText))
        .observe(status, {subtree: true, childList: true, characterData: true});
}"""


def serve(models: dict, folder: Path) -> Iterator[str]:
    demo = app.build_demo(models, app.OutputStore(folder))
    port = free_port()
    app.launch(
        demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    yield from serve({"tiny": tiny_pipeline()}, tmp_path_factory.mktemp("o"))


@pytest.fixture(scope="module")
def text_url(tmp_path_factory) -> Iterator[str]:
    yield from serve({"text": tiny_text_pipeline()}, tmp_path_factory.mktemp("t"))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#generate")
    return page


@pytest.fixture(scope="module")
def page(browser, url: str):
    page = open_page(browser, url, 1280, 1000)
    yield page
    page.close()


def shown_gif(page) -> Image.Image:
    """The GIF the page shows, fetched from the very URL the <img> element loaded."""
    img = page.wait_for_selector("#gif img[src$='.gif']")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img)
    body = page.request.get(img.get_attribute("src")).body()
    assert body[:6] == b"GIF89a"
    return Image.open(io.BytesIO(body))


def wait_status(page, prefix: str) -> str:
    page.wait_for_function(
        "p => document.querySelector('#status').innerText.startsWith(p)", arg=prefix
    )
    return page.inner_text("#status")


def no_error_pills(page) -> None:
    """Gradio stamps "Error" over outputs when a handler raises; ours never do."""
    assert page.locator(".error:visible").count() == 0
    assert "Error" not in page.inner_text("#status")


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_generate_is_in_view_on_load(browser, url: str, width: int, height: int, tmp_path):
    page = open_page(browser, url, width, height)
    page.screenshot(path=tmp_path / "load.png")
    with Image.open(tmp_path / "load.png") as shot:
        assert shot.size == (width, height)
    box = page.locator("#generate").bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, box
    # Every tab is a visible button, not folded into a menu; the dice button says what it does.
    for title in ("Generate", "Edit", "Morph", "Forward", "Compare"):
        tab = page.get_by_role("tab", name=title)
        assert tab.is_visible(), title
        tab_box = tab.bounding_box()
        assert tab_box["x"] >= 0 and tab_box["x"] + tab_box["width"] <= width, title
    page.get_by_text("Options", exact=True).click()
    assert "Random" in page.inner_text("#dice")
    page.screenshot(path=SHOTS / f"load-{width}x{height}.png", full_page=True)
    page.close()


def test_generate_shows_the_animation(page):
    page.click("#generate")
    wait_status(page, "done:")
    gif = shown_gif(page)
    # The defaults: 16 sprites in a 4x4 grid, 1 px gaps, enlarged 8x; dpmpp_2m in 20 steps.
    assert gif.size == (536, 536) and gif.n_frames == 20
    assert page.get_attribute("#live img", "src").endswith(".png")  # lossless, not WebP


def test_one_step_and_a_refused_input(page):
    steps = page.locator("#steps input")
    steps.fill("1")
    steps.press("Enter")
    page.click("#generate")
    wait_status(page, "done: 16 × hero · dpmpp_2m · 1 steps")  # not the last run's "done:"
    assert shown_gif(page).n_frames == 1
    no_error_pills(page)
    steps.fill("9999")  # not clamped: refused with a message, the last results kept
    steps.press("Enter")
    page.click("#generate")
    message = wait_status(page, "⚠️")
    assert "Steps for dpmpp_2m must be a whole number from 1 to 100 (got 9999)" in message
    assert page.locator("#gif img[src$='.gif']").count() == 1
    no_error_pills(page)
    steps.fill("20")
    steps.press("Enter")


def test_stop_right_after_generate(page):
    # The longest run the tiny model allows, so that Stop lands before it ends on a busy machine.
    steps = page.locator("#steps input")
    steps.fill("100")
    steps.press("Enter")
    page.click("#generate")
    page.click("#stop")
    status = wait_status(page, "stopped")
    assert "stopped" in status
    no_error_pills(page)
    steps.fill("20")
    steps.press("Enter")


def test_example_streams_progress_then_the_gif(page):
    page.evaluate(WATCH_STATUS)
    page.get_by_text("creature", exact=True).click()  # the example row: creature, ddim, 50 steps
    wait_status(page, "done: 9 × creature · ddim")
    steps = [s for s in page.evaluate("window.statuses") if s.startswith("step ")]
    assert steps and all("/50 · " in s and "% · " in s and " s left · " in s for s in steps)
    gif = shown_gif(page)
    assert gif.size == (400, 400) and gif.n_frames == 50  # 9 sprites: 3x3


def test_edit_repaints_a_brushed_stroke(page):
    page.get_by_role("tab", name="Edit").click()
    page.get_by_text("🎲 New sprite").click()
    page.wait_for_function("document.querySelector('#edit-status').innerText.startsWith('a ')")
    page.locator("#editor button[aria-label='Brush']").click()
    box = page.locator("#editor canvas").first.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 40, y)
    page.mouse.down()
    for dx in range(-40, 41, 8):
        page.mouse.move(x + dx, y + 5, steps=2)
    page.mouse.up()
    page.click("#edit")
    page.wait_for_function(
        "document.querySelector('#edit-status').innerText.startsWith('done:')", timeout=60_000
    )
    assert "repaint" in page.inner_text("#edit-status")  # the stroke became a mask
    assert page.locator("#edit-gif img[src$='.gif']").count() == 1
    page.screenshot(path=SHOTS / "edit.png", full_page=True)
    no_error_pills(page)
    page.get_by_role("tab", name="Generate").click()


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_a_text_model_gets_a_prompt_box_with_generate_in_view(
    browser, text_url: str, width: int, height: int
):
    page = open_page(browser, text_url, width, height)
    box = page.locator("#generate").bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, box
    prompt = page.locator("#prompt textarea, #prompt input").first
    assert prompt.is_visible()
    if width > 1000:
        page.get_by_text("red potion", exact=True).click()  # an example fills prompt and label
        page.wait_for_function(
            "() => document.querySelector('#prompt textarea, #prompt input').value === 'red potion'"
        )
        page.click("#generate")
        assert '"red potion" (food)' in wait_status(page, "done:")
        no_error_pills(page)
        page.screenshot(path=SHOTS / "prompt.png", full_page=True)
    page.close()
