"""The `rnnkit viz` page in a real browser: Debian's chromium driven by Playwright for Python.

The browser is the system's (``make setup`` installs it with apt where it can); Playwright's own
download (``playwright install``) is never used. Every request that is not for the page's own
``file:`` URL is aborted and fails the test: the page must need no network.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rnnkit.config import ModelConfig
from rnnkit.data.vocab import Vocab
from rnnkit.inspect.features import choose_features
from rnnkit.inspect.text import encode_text
from rnnkit.inspect.viz import CHROMIUM_ARGS, build_report
from rnnkit.tasks.lm import LanguageModel

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TEXT = 'def greet(name):\n    print("hello, " + name)  # say (it)\n\ngreet("world")\n' * 12

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the Python package playwright is not installed (make setup)"
)
if not Path(CHROMIUM).exists():
    pytest.skip(
        "no chromium browser: `make setup` installs Debian's chromium when run as root with apt",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    vocab = Vocab.build(TEXT)
    config = ModelConfig(cell="lstm", num_layers=2, hidden_size=8, embedding_size=4, dropout=0)
    model = LanguageModel(config, len(vocab)).eval()
    model.attach_vocab(vocab, "char")
    text = encode_text(TEXT, vocab, "char")
    html = build_report(model, text, choose_features([]), title="Browser test", page_size=300)
    path = tmp_path_factory.mktemp("viz") / "cells.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        except Exception as err:  # a browser that cannot start here is an environment matter
            pytest.skip(f"chromium at {CHROMIUM} does not start: {str(err).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture
def page(browser, page_file):
    """The report, loaded with every request but its own file: URL aborted and recorded."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    foreign, errors = [], []

    def guard(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_file.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    yield page
    assert foreign == [], f"the page asked the network for {foreign}"
    assert errors == [], f"script errors: {errors}"
    context.close()


def colours(page, count: int = 120) -> list[str]:
    return page.eval_on_selector_all(
        "#text span[data-i]",
        f"spans => spans.slice(0, {count}).map(s => s.style.backgroundColor)",
    )


def test_the_text_is_there_and_coloured(page) -> None:
    text = page.inner_text("#text")
    assert 'print("hello, " + name)' in text
    shown = colours(page)
    assert len(shown) == 120 and len(set(shown)) > 5  # a scale, not one colour
    assert page.locator("#layer option").count() == 2
    assert page.locator("#cell option").count() == 8  # every cell of a short text


def test_picking_a_cell_or_a_layer_changes_the_colours(page) -> None:
    before = colours(page)
    current = page.input_value("#cell")
    other = "1" if current != "1" else "2"
    page.select_option("#cell", other)
    after_cell = colours(page)
    assert after_cell != before
    page.select_option("#layer", "1")
    assert colours(page) != after_cell
    assert "layer 2" in page.inner_text("#cell-info")
    page.click("#cell-next")
    assert page.input_value("#cell") == "1"  # the layer change started at its first cell


def test_best_cell_buttons_jump_to_their_cell(page) -> None:
    button = page.locator(".best").nth(3)
    layer, cell = button.get_attribute("data-layer"), button.get_attribute("data-cell")
    button.click()
    assert page.input_value("#layer") == layer
    assert f"cell {cell}:" in page.inner_text("#cell-info")
    assert "current" in button.get_attribute("class")


def test_hover_shows_the_next_token_predictions(page) -> None:
    assert not page.is_visible("#tooltip")
    page.hover("#text span[data-i='5']")  # "def gr": after r
    page.wait_for_selector("#tooltip", state="visible")
    tip = page.inner_text("#tooltip")
    assert tip.startswith("after r")
    probabilities = [
        float(v)
        for v in page.eval_on_selector_all("#tooltip td.p", "c => c.map(x => x.textContent)")
    ]
    assert len(probabilities) >= 5 and probabilities[:5] == sorted(probabilities[:5], reverse=True)
    assert 0 < sum(probabilities[:5]) <= 1.01
    assert page.locator("#tooltip tr.actual").count() == 1  # the e that came next
    assert page.inner_text("#tooltip tr.actual td.tok") == "e"


def test_pages_of_text(page) -> None:
    assert page.inner_text("#page-label").startswith("page 1 of ")
    page.click("#page-next")
    first = page.eval_on_selector("#text span[data-i]", "s => s.dataset.i")
    assert first == "300"
    assert page.inner_text("#page-label").startswith("page 2 of ")


def test_a_screenshot_is_not_blank(page, tmp_path) -> None:
    shot = tmp_path / "viz.png"
    page.hover("#text span[data-i='40']")
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 800 and pixels.shape[1] == 1300
    assert pixels.std() > 20  # not one flat colour
    distinct = np.unique(pixels.reshape(-1, 3)[::7].astype(np.uint8), axis=0)
    assert len(distinct) > 200  # text, colour scale, plots
