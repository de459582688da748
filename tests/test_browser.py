"""End-to-end: a real Chromium opens the app, generates, and gets the animation.

Needs Playwright for Python and Debian's chromium at /usr/bin/chromium (``apt-get install -y
chromium``; ``playwright install`` is not used). Skipped with the reason when either is missing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest
from PIL import Image

import app
from tests.test_app import free_port, tiny_pipeline

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

# Records every text the status line shows, so the test can see the live progress stream by.
WATCH_STATUS = """() => {
    window.statuses = [];
    const status = document.querySelector('#status');
    new MutationObserver(() => window.statuses.push(status.innerText))
        .observe(status, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    demo = app.build_demo({"tiny": tiny_pipeline()}, app.OutputStore(tmp_path_factory.mktemp("o")))
    port = free_port()
    app.launch(
        demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def page(url: str):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#generate")
        yield page
        browser.close()


def shown_gif(page) -> Image.Image:
    """The GIF the page shows, fetched from the very URL the <img> element loaded."""
    img = page.wait_for_selector("#gif img[src$='.gif']")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img)
    body = page.request.get(img.get_attribute("src")).body()
    assert body[:6] == b"GIF89a"
    return Image.open(io.BytesIO(body))


def test_generate_shows_the_animation(page):
    page.click("#generate")
    page.wait_for_function("document.querySelector('#status').innerText.startsWith('done:')")
    gif = shown_gif(page)
    # The defaults: 16 sprites in a 4x4 grid, 1 px gaps, enlarged 8x; dpmpp_2m in 20 steps.
    assert gif.size == (536, 536) and gif.n_frames == 20
    assert page.get_attribute("#live img", "src").endswith(".png")  # lossless, not WebP


def test_example_streams_progress_then_the_gif(page):
    page.evaluate(WATCH_STATUS)
    page.get_by_text("creature", exact=True).click()  # the example row: creature, ddim, 50 steps
    page.wait_for_function(
        "document.querySelector('#status').innerText.startsWith('done: 9 × creature · ddim')"
    )
    steps = [s for s in page.evaluate("window.statuses") if s.startswith("step ")]
    assert steps and all("/50 - " in s and " ms/step" in s for s in steps)
    gif = shown_gif(page)
    assert gif.size == (400, 400) and gif.n_frames == 50  # 9 sprites: 3x3
