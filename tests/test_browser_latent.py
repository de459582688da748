"""End-to-end, bigger sprites: a real Chromium presses "Upscale 2x" on a 16x16 model's sprites
and gets 32x32 ones, then picks a 32x32 latent model and watches its latent beside the sprites.

Needs what tests/test_browser.py needs (Playwright and /usr/bin/chromium); skipped without them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from tests import test_browser
from tests.test_app import tiny_pipeline
from tests.test_browser import SHOTS, no_error_pills, open_page, serve, wait_status
from tests.test_ui_latent import tiny_latent_pipeline, tiny_upscaler

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


browser = test_browser.browser  # the fixture: one Chromium for the module


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> Iterator[str]:
    models = {"tiny": tiny_pipeline(), "latent": tiny_latent_pipeline(), "up": tiny_upscaler()}
    yield from serve(models, tmp_path_factory.mktemp("u"))


def natural_size(page, selector: str) -> tuple[int, int]:
    img = page.wait_for_selector(selector)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img)
    return tuple(img.evaluate("img => [img.naturalWidth, img.naturalHeight]"))


def test_upscale_2x_then_a_latent_models_latent(browser, url: str):
    page = open_page(browser, url, 1280, 1000)
    assert page.locator("#upscale").is_visible() and not page.locator("#latent").is_visible()
    steps = page.locator("#steps input")
    steps.fill("4")
    steps.press("Enter")
    page.click("#generate")
    done = wait_status(page, "done: 16 × hero")
    page.click("#upscale")
    status = wait_status(page, "done: 16 × upscaled from 16×16", after=done)
    no_error_pills(page)
    link = page.locator("a[href*='/upscaled-01.png']").first
    with Image.open(io.BytesIO(page.request.get(link.get_attribute("href")).body())) as png:
        assert png.size == (32, 32) and png.mode == "RGBA"
    # The sheet of 32 px sprites is drawn 4x: as large as the 16 px sheet it came from at 8x.
    assert natural_size(page, "#live img") == (4 * 131, 4 * 131)
    page.screenshot(path=SHOTS / "upscale.png", full_page=True)

    # A latent model: the button goes (its sprites are 32x32), the latent view comes.
    page.locator("button", has_text="Model").first.click()
    page.locator("input[aria-label='Model']").click()
    page.get_by_role("option", name="latent").click()
    page.wait_for_selector("#latent", state="visible")
    page.wait_for_selector("#upscale", state="hidden")
    assert "4 channels of 8×8" in page.inner_text("#latent-note")
    page.click("#generate")
    wait_status(page, "done: 16 × hero", after=status)
    assert natural_size(page, "#latent img") == (17 * 8, 17 * 8)  # 2x2 channels of 8x8, 8x
    no_error_pills(page)
    page.screenshot(path=SHOTS / "latent-view.png", full_page=True)
    page.close()
