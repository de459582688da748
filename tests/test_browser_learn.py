"""In a real Chromium: the Guidance and 2D tabs show their pictures, at desktop and phone size.

Reuses the server and browser of ``tests.test_browser`` (and skips, with its reason, where that
module does: no chromium, no Playwright).
"""

from __future__ import annotations

import pytest

from tests.test_browser import SHOTS, browser, no_error_pills, open_page, url  # noqa: F401

SIZES = [(1280, 900), (390, 844)]


def wait_text(page, selector: str, prefix: str) -> str:
    page.wait_for_function(
        "([s, p]) => document.querySelector(s)?.innerText.trim().startsWith(p)",
        arg=[selector, prefix],
    )
    return page.inner_text(selector)


def shown_images(page, selector: str, width: int) -> None:
    """Every image in ``selector`` is loaded and lies within the page's width."""
    images = page.locator(f"{selector} img")
    assert images.count() >= 1, selector
    for i in range(images.count()):
        img = images.nth(i)
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=img.element_handle()
        )
        box = img.bounding_box()
        assert box["width"] > 0.5 * min(width, 600) and box["x"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= width + 1, (selector, box)


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_guidance_tab_shows_both_branches(browser, url: str, width: int, height: int):  # noqa: F811
    page = open_page(browser, url, width, height)
    page.get_by_role("tab", name="Guidance").click()
    caption = wait_text(page, "#guidance-caption", "Step ")  # shown on opening, unasked
    assert "without the label" in caption
    step = page.locator("#guidance-step input[type=number]")
    step.fill("1")
    step.press("Enter")
    wait_text(page, "#guidance-caption", "Step 1 of")
    for selector in ("#guidance-x0", "#guidance-eps"):
        shown_images(page, selector, width)
    no_error_pills(page, "#guidance-caption")
    page.screenshot(path=SHOTS / f"guidance-{width}x{height}.png", full_page=True)
    page.close()


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_2d_tab_shows_paths_and_the_forward_animation(browser, url: str, width: int, height: int):  # noqa: F811
    page = open_page(browser, url, width, height)
    page.get_by_role("tab", name="2D").click()
    assert wait_text(page, "#toy-status", "done: ring").startswith("done: ring, 400 points")
    if width > 1000:  # a run of the button too, not only the first look
        page.get_by_label("ddpm").uncheck()
        page.click("#toy")
        wait_text(page, "#toy-status", "done: ring, 400 points, seed 0, 10 steps of ddim")
    shown_images(page, "#toy-picture", width)
    gif = page.locator("#toy-animation img")
    assert gif.get_attribute("src").endswith(".gif")
    no_error_pills(page, "#toy-status")
    page.screenshot(path=SHOTS / f"toy-{width}x{height}.png", full_page=True)
    page.close()
