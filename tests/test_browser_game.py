"""End-to-end, for games: a real Chromium picks a game palette, tileable tiles and the game
downloads, uploads a palette file, and fetches the sheet's JSON and the sprites' zip.

Needs what tests/test_browser.py needs (Playwright and /usr/bin/chromium); skipped without them.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from diffusion import palettes
from tests import test_browser
from tests.test_browser import SHOTS, fill_kept, no_error_pills, open_page, serve, wait_status
from tests.test_game import assert_clear_is_transparent, opaque_colours, tiny_rgba_pipeline

pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


browser = test_browser.browser  # the fixture: one Chromium for the module


@pytest.fixture(scope="module")
def game_url(tmp_path_factory) -> Iterator[str]:
    yield from serve({"tiny": tiny_rgba_pipeline()}, tmp_path_factory.mktemp("g"))


def download(page, name: str) -> bytes:
    """The file called ``name`` in the Downloads list, fetched from its link."""
    link = page.locator(f"a[href*='/{name}']").first
    return page.request.get(link.get_attribute("href")).body()


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option).click()


def test_a_game_maker_gets_tiles_a_sheet_and_their_palette(browser, game_url: str, tmp_path):
    page = open_page(browser, game_url, 1280, 1100)
    steps = page.locator("#steps input")
    steps.fill("4")
    steps.press("Enter")
    page.get_by_text("Options", exact=True).click()
    pick(page, "palette", "PICO-8")
    fill_kept(page, "#batch input[type='number']", "4")
    page.locator("#batch input[type='number']").press("Enter")
    page.get_by_text("For games", exact=True).click()
    page.locator("#tileable input").check()
    page.locator("#exports").get_by_text("2x", exact=True).click()
    page.click("#generate")
    try:
        status = wait_status(page, "done:")
    finally:
        page.screenshot(path=SHOTS / "game-tiles.png", full_page=True)
    assert "4 × hero" in status and "palette pico8 · tileable" in status and "laid 3×3" in status
    no_error_pills(page)
    page.wait_for_selector("a[href*='/sheet.json']")
    page.locator("#live").scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "game-tiles.png", full_page=True)

    meta = json.loads(download(page, "sheet.json"))
    sheet = np.asarray(Image.open(io.BytesIO(download(page, "sheet.png"))))
    assert meta["meta"]["scale"] == "2" and len(meta["frames"]) == 4
    assert sheet.shape == (meta["meta"]["size"]["h"], meta["meta"]["size"]["w"], 4)
    pico8 = {tuple(map(int, c)) for c in palettes.load("pico8")}
    assert opaque_colours(sheet) <= pico8
    assert_clear_is_transparent(sheet)
    with zipfile.ZipFile(io.BytesIO(download(page, "hero-sprites.zip"))) as zipped:
        assert "hero-01.png" in zipped.namelist() and "hero-04@8x.png" in zipped.namelist()
    laid = Image.open(io.BytesIO(download(page, "tiles-3x3.png")))
    assert laid.size == ((2 * 49 - 1) * 4, (2 * 49 - 1) * 4)  # 4 tiles, each laid 3x3

    # A palette file of the person's own: uploaded, picked for them, used.
    mine = tmp_path / "two.hex"
    mine.write_text("ff004d\n29adff\n")
    page.locator("#tileable input").uncheck()
    page.locator("#palette-file input[type='file']").set_input_files(str(mine))
    page.wait_for_function(
        "() => document.querySelector('#palette input').value.startsWith('my palette file')"
    )
    before = page.inner_text("#status")
    page.click("#generate")
    status = wait_status(page, "done:", after=before)
    assert "palette 2 colours" in status and "tileable" not in status
    page.wait_for_selector("a[href*='/sheet.json']")
    sheet = np.asarray(Image.open(io.BytesIO(download(page, "sheet.png"))))
    assert opaque_colours(sheet) <= {(255, 0, 77), (41, 173, 255)}
    page.screenshot(path=SHOTS / "game-palette-file.png", full_page=True)

    # A file that is no palette is refused with what is accepted, the last results kept.
    bad = tmp_path / "notes.gpl"
    bad.write_text("just some words\n")
    page.locator("#palette-file button[aria-label='Clear']").click()
    page.locator("#palette-file input[type='file']").set_input_files(str(bad))
    page.click("#generate")
    message = wait_status(page, "⚠️")
    assert "first line must be 'GIMP Palette'" in message
    no_error_pills(page)
    page.close()
