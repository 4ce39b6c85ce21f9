"""The web page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by Selenium), as a user would use it: upload a photo, see the grid, click a result
and see the grid change, like results for "more like these", open the duplicates view and
the map, and fit a phone's screen. Screenshots go to $RETRIEVE_SCREENSHOTS (default: the
test's temporary folder). Skipped where Chromium, its driver or Selenium is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from retrieval import Engine
from retrieval.extractors import Extractor
from retrieval.options import EngineOptions
from retrieval.serve import create_app

from .conftest import build_bundle, copy_sample

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not installed")

WAIT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, extractor: Extractor) -> Iterator[tuple[str, Path]]:
    """(base URL, photos) of a real server on the loopback interface: the ten sample
    photos plus a copy of one cup, so the duplicates view has a group."""
    import uvicorn

    root = tmp_path_factory.mktemp("page")
    photos = copy_sample(root / "photos")
    shutil.copyfile(sorted((photos / "cup").glob("*.jpg"))[0], photos / "cup" / "copy.jpg")
    bundle = build_bundle(root / "bundle", extractor, photos)
    port = _free_port()
    with Engine.open(bundle, options=EngineOptions(device="cpu", workers=0), extractor=extractor) as engine:
        server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/", photos
        server.should_exit = True
        thread.join(WAIT_S)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def shots(tmp_path: Path) -> Callable[[Any, str], Path]:
    folder = Path(os.environ.get("RETRIEVE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(driver: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000
        return path

    return take


def wait_for(driver: Any, condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; status: {status(driver)!r}")


def status(driver: Any) -> str:
    return driver.execute_script("return document.querySelector('#status').textContent")


def grid_paths(driver: Any) -> list[str]:
    """The results on screen, as their paths (each thumbnail's title), once all have loaded."""
    return driver.execute_script(
        "const imgs = [...document.querySelectorAll('#grid .card img')];"
        "return imgs.every(i => i.complete && i.naturalWidth > 0) ? imgs.map(i => i.title) : null;")


def severe_console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_search_click_and_more_like_these(site: tuple[str, Path], browser: Any, shots: Callable[[Any, str], Path]) -> None:
    from selenium.webdriver.common.by import By

    url, photos = site
    browser.get(url)
    assert len(wait_for(browser, lambda: grid_paths(browser), "the listing")) == 11
    assert not browser.find_element(By.ID, "selection").is_displayed()  # nothing picked yet
    query = sorted((photos / "chair").glob("*.jpg"))[1]
    pick = browser.find_element(By.ID, "pick")
    browser.execute_script("arguments[0].hidden = false", pick)  # the label opens it for a user
    pick.send_keys(str(query))
    browser.execute_script("arguments[0].hidden = true", pick)
    wait_for(browser, lambda: "results in" in status(browser), "the search")
    first = wait_for(browser, lambda: grid_paths(browser), "the result thumbnails")
    assert first[0] == str(query)  # the photo itself is indexed: it comes first
    scores = [float(s.text) for s in browser.find_elements(By.CSS_SELECTOR, "#grid .score")]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.99
    shots(browser, "1-search")

    clicked = first[2]
    browser.find_elements(By.CSS_SELECTOR, "#grid .card img")[2].click()
    second = wait_for(browser, lambda: (p := grid_paths(browser)) and p != first and p, "the grid to change")
    assert clicked not in second and second[0] != first[0]  # searched from the clicked image, which is left out
    shots(browser, "2-clicked")

    liked = second[:2]
    for button in browser.find_elements(By.CSS_SELECTOR, "#grid .card .like")[:2]:
        button.click()
    assert "2 liked" in browser.find_element(By.ID, "selection-text").text
    assert not browser.find_element(By.ID, "load-more").is_displayed()  # paging is for the listing only
    browser.find_element(By.ID, "more-like").click()
    wait_for(browser, lambda: "more like the 2" in status(browser), "more like these")
    third = wait_for(browser, lambda: grid_paths(browser), "the recommendations")
    assert not set(liked) & set(third)
    assert not severe_console_errors(browser)


def test_duplicates_view_and_map(site: tuple[str, Path], browser: Any, shots: Callable[[Any, str], Path]) -> None:
    from selenium.webdriver.common.by import By

    url, photos = site
    browser.get(url)
    browser.find_element(By.CSS_SELECTOR, 'nav button[data-view="dupes"]').click()
    wait_for(browser, lambda: browser.find_element(By.ID, "dupes-status").text == "1 groups", "the duplicates")
    cards = browser.find_elements(By.CSS_SELECTOR, "#dupes .group .card")
    assert sorted(c.find_element(By.TAG_NAME, "img").get_attribute("title") for c in cards) == sorted(
        [str(photos / "cup" / "copy.jpg"), str(sorted((photos / "cup").glob("image_*.jpg"))[0])])
    assert any("300\u00d7198" in c.text for c in cards) and all("kB" in c.text for c in cards)
    shots(browser, "3-duplicates")

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-view="map"]').click()
    painted = ("const c = document.querySelector('#map'); const d = c.getContext('2d')"
               ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
               "for (let i = 0; i < d.length; i += 4) if (d[i + 3] && (d[i] + d[i + 1] + d[i + 2]) > 120) n++; return n;")
    wait_for(browser, lambda: browser.execute_script(painted), "the map to be drawn")
    scale = browser.execute_script("return map.scale")
    canvas = browser.find_element(By.ID, "map")
    browser.execute_script("const r = arguments[0].getBoundingClientRect();"
                           "arguments[0].dispatchEvent(new WheelEvent('wheel', {deltaY: -120, clientX: r.left + r.width / 2,"
                           " clientY: r.top + r.height / 2, bubbles: true, cancelable: true}))", canvas)
    assert browser.execute_script("return map.scale") == pytest.approx(scale * 1.4918, rel=1e-3)  # e^(120/300)
    wait_for(browser, lambda: browser.execute_script(painted), "the zoomed map")
    shots(browser, "4-map")
    assert not severe_console_errors(browser)


def test_the_page_fits_a_phone(site: tuple[str, Path], browser: Any, shots: Callable[[Any, str], Path]) -> None:
    browser.set_window_size(390, 844)
    browser.get(site[0])
    wait_for(browser, lambda: grid_paths(browser), "the listing")
    width, inner, columns = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " getComputedStyle(document.querySelector('#grid')).gridTemplateColumns.split(' ').length]")
    assert width <= inner and columns == 2
    shots(browser, "5-phone")


def test_the_api_docs_render_offline(site: tuple[str, Path], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site[0] + "docs")
    operations = wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), "Swagger UI")
    assert "/search/image" in {o.text for o in operations}
    assert not severe_console_errors(browser)
