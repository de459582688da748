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

import numpy as np
import pytest
from PIL import Image

import app
from tests.test_app import free_port, tiny_pipeline, tiny_text_pipeline
from ui.studio import default_steps

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


def wait_status(page, prefix: str, after: str | None = None) -> str:
    """The status once it starts with ``prefix`` (and, given ``after``, the status before the
    click, once it is another: a second run's "done:" must not be the first one's)."""
    page.wait_for_function(
        "([p, old]) => { const s = document.querySelector('#status').innerText;"
        " return s.startsWith(p) && s !== old; }",
        arg=[prefix, after],
    )
    return page.inner_text("#status")


def no_error_pills(page, status: str = "#status") -> None:
    """Gradio stamps "Error" over outputs when a handler raises; ours never do."""
    assert page.locator(".error:visible").count() == 0
    assert "Error" not in page.inner_text(status)


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_generate_is_in_view_on_load(browser, url: str, width: int, height: int, tmp_path):
    page = open_page(browser, url, width, height)
    page.screenshot(path=tmp_path / "load.png")
    with Image.open(tmp_path / "load.png") as shot:
        assert shot.size == (width, height)
    box = page.locator("#generate").bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, box
    # Every tab is a visible button, not folded into a menu; the dice button says what it does.
    for title in ("Generate", "Edit", "Morph", "Forward", "Compare", "Guidance", "2D"):
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
    page.get_by_text("creature", exact=True).click()  # the example row: creature with ddim
    wait_status(page, "done: 9 × creature · ddim")
    ddim = default_steps(tiny_pipeline(), "ddim")  # the model's steps for the example's sampler
    steps = [s for s in page.evaluate("window.statuses") if s.startswith("step ")]
    assert steps and all(f"/{ddim} · " in s and "% · " in s and " s left · " in s for s in steps)
    gif = shown_gif(page)
    assert gif.size == (400, 400) and gif.n_frames == ddim  # 9 sprites: 3x3


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


def test_a_phone_sees_the_results_after_a_tap(browser, url: str):
    page = open_page(browser, url, 390, 844)
    assert page.locator("#status").bounding_box()["y"] > 844 / 2  # far below, under the controls
    page.click("#generate")
    wait_status(page, "done:")
    # The status and the picture come into view by themselves: the tap visibly did something.
    page.wait_for_function(
        "() => { const r = document.querySelector('#status').getBoundingClientRect();"
        " return r.top > -1 && r.top < 60; }"  # scrolled to the top, give or take a subpixel
    )
    live = page.locator("#live img").bounding_box()
    assert live["y"] > -1 and live["y"] + live["height"] <= 844, live
    page.screenshot(path=SHOTS / "phone-after-generate.png")
    page.close()


def drawn_extent(shot: Image.Image) -> tuple[int, int]:
    """Width and height of the part of a screenshot that differs from its corner's colour."""
    pixels = np.asarray(shot.convert("RGB")).astype(int)
    differs = np.abs(pixels - pixels[0, 0]).sum(-1) > 30
    rows, cols = np.flatnonzero(differs.any(1)), np.flatnonzero(differs.any(0))
    return cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1


def test_one_sprite_fills_its_panel(browser, url: str):
    page = open_page(browser, url, 1280, 1000)
    page.get_by_text("Options", exact=True).click()
    fill_kept(page, "#batch input[type=number]", "1")
    page.locator("#batch input[type=number]").press("Enter")
    page.click("#generate")
    wait_status(page, "done: 1 × hero")
    page.wait_for_function("() => document.querySelector('#live img')?.complete")
    box = page.locator("#live img").bounding_box()
    panel = min(box["width"], box["height"])  # the sheet is square
    drawn = drawn_extent(Image.open(io.BytesIO(page.locator("#live img").screenshot())))
    # The 128 px sheet is drawn as large as the panel, not at its own size inside it.
    assert panel > 300 and min(drawn) >= 0.95 * panel, (drawn, box)
    page.close()


def test_compare_captions_sit_whole_under_their_sprites(browser, url: str):
    page = open_page(browser, url, 1280, 1000)
    page.get_by_role("tab", name="Compare").click()
    page.click("#compare")
    page.wait_for_function(
        "document.querySelector('#compare-status').innerText.startsWith('done:')"
    )
    status = page.inner_text("#compare-status")
    assert " through " in status and " steps: " in status  # what was compared, each time taken
    items = page.locator("#compare-gallery .thumbnail-item")
    assert items.count() == 4
    for i in range(items.count()):
        caption = items.nth(i).locator(".caption-label")
        picture = items.nth(i).locator("img").bounding_box()
        box = caption.bounding_box()
        assert box["y"] >= picture["y"] + picture["height"] - 1, (box, picture)  # not over it
        assert caption.evaluate("e => e.scrollWidth <= e.clientWidth")  # not cut off
        assert caption.inner_text().endswith(" s")
    page.screenshot(path=SHOTS / "compare.png", full_page=True)
    page.close()


def sprite_shot(page, locator, tries: int = 120) -> np.ndarray:
    """The element's pixels once a sprite is drawn (more than two colours) and two screenshots
    in a row agree: the editor's canvas draws over several frames after its value arrives,
    later on a busy machine (beside training and an evaluation, more than 10 s)."""
    last = None
    for _ in range(tries):
        shot = np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"))
        drawn = len(np.unique(shot.reshape(-1, 3), axis=0)) > 2
        if drawn and last is not None and np.array_equal(shot, last):
            return shot
        last = shot
        page.wait_for_timeout(250)
    raise AssertionError(f"no steady sprite in the element after {tries / 4:.0f} s")


def test_edit_keeps_its_sprite_when_an_upload_is_refused(browser, url: str, tmp_path: Path):
    page = open_page(browser, url, 1280, 1000)
    page.get_by_role("tab", name="Edit").click()
    page.get_by_text("🎲 New sprite").click()
    page.wait_for_function("document.querySelector('#edit-status').innerText.startsWith('a ')")
    canvas = page.locator("#editor canvas").first
    before = sprite_shot(page, canvas)
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with page.expect_file_chooser() as chooser:
        page.click("#edit-upload")
    chooser.value.set_files(str(bad))
    page.wait_for_function("document.querySelector('#edit-status').innerText.startsWith('⚠️')")
    assert "not an image we can read" in page.inner_text("#edit-status")
    assert np.array_equal(sprite_shot(page, canvas), before)  # the sprite is still there, unchanged
    no_error_pills(page, "#edit-status")
    page.close()


def test_forward_takes_an_upload_from_a_button_the_size_of_its_neighbours(
    browser, url: str, tmp_path: Path
):
    page = open_page(browser, url, 1280, 1000)
    page.get_by_role("tab", name="Forward").click()
    page.wait_for_function("document.querySelector('#forward-info').innerText.includes('drawn')")
    red = tmp_path / "red.png"
    Image.new("RGBA", (16, 16), (255, 0, 0, 255)).save(red)
    with page.expect_file_chooser() as chooser:
        page.click("#forward-upload")
    chooser.value.set_files(str(red))
    page.wait_for_function("document.querySelector('#forward-info').innerText.includes('upload')")
    # The row holds three buttons of one height, not a drop zone that leaves a gap under two.
    heights = [
        page.get_by_text(name).first.bounding_box()["height"]
        for name in ("Draw a new sprite", "Use my last generated sprite")
    ]
    upload = page.locator("#forward-upload").bounding_box()["height"]
    assert max(heights) * 0.8 < upload < max(heights) * 1.25, (heights, upload)
    page.close()


def fill_kept(page, selector: str, text: str) -> None:
    """Fill a box inside a just-opened accordion: Gradio mounts an accordion's contents on first
    open, and a box filled before that settles is replaced by an empty one (a person cannot type
    that fast). Refill until the value stays."""
    box = page.locator(selector).first
    for _ in range(20):
        box.fill(text)
        page.wait_for_timeout(250)
        if box.input_value() == text:
            return
    raise AssertionError(f"{selector} kept losing its value")


def test_text_guidance_controls_reach_the_status(browser, text_url: str):
    page = open_page(browser, text_url, 1280, 1000)
    page.locator("#prompt textarea, #prompt input").first.fill("red potion")
    page.get_by_text("Options", exact=True).click()
    fill_kept(page, "#negative-prompt textarea, #negative-prompt input", "blue potion")
    fill_kept(page, "#guidance-text input", "3")
    fill_kept(page, "#rerank input[type=number]", "2")
    page.locator("#rerank input[type=number]").first.press("Enter")
    page.click("#generate")
    status = wait_status(page, "done:")
    assert 'text 3 · away from "blue potion" · best of 2 by SpriteCLIP' in status, status
    assert "SpriteCLIP score" in status
    no_error_pills(page)
    page.screenshot(path=SHOTS / "text-guidance.png", full_page=True)
    page.close()
