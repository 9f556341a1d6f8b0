"""The report in a real browser (headless Chromium): it loads from disk with no console error
and no request, every formula is laid out as mathematics, the diagram and curves are drawn,
the formula <-> code highlight works both ways, and it reads the same without JavaScript.

Skipped, with one line saying how to install them, where Chromium, ChromeDriver or Selenium
are missing; CI installs them (`.ci/run`) and sets NNCOMPILE_REQUIRE_BROWSER=1, so there a
missing browser fails instead.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from nncompile.cli import main
from nncompile.derive.backprop import derive
from nncompile.dsl.modelfile import load_model
from nncompile.explain.formulas import Formulas
from nncompile.report.page import derivation_html, write

import browser as chromium

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 8

#: Runs in the page: every <math> box, and whether fractions stack and subscripts sit low.
MATH_LAYOUT = """
const bad = [];
const maths = Array.from(document.querySelectorAll('math'));
for (const m of maths) {
  const r = m.getBoundingClientRect();
  if (!(r.width > 0 && r.height > 0)) bad.push('empty <math>: ' + m.textContent.slice(0, 40));
}
for (const f of document.querySelectorAll('mfrac')) {
  const [top, bottom] = Array.from(f.children).map(c => c.getBoundingClientRect());
  if (!(top.bottom <= bottom.top + 1)) bad.push('fraction not stacked: ' + f.textContent.slice(0, 40));
}
for (const s of document.querySelectorAll('msub')) {
  const [base, sub] = Array.from(s.children).map(c => c.getBoundingClientRect());
  if (!(sub.bottom > base.bottom && sub.left >= base.right - 1)) bad.push('subscript not lowered: ' + s.textContent);
}
return [maths.length, document.querySelectorAll('mfrac').length, bad];
"""


@pytest.fixture(scope="module")
def driver() -> object:
    found = chromium.executables()
    if found is None:
        if os.environ.get("NNCOMPILE_REQUIRE_BROWSER"):
            pytest.fail(chromium.INSTALL)
        pytest.skip(chromium.INSTALL)
    browser = chromium.start(*found)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report-pages")
    digits = folder / "digits.html"
    assert main(["run", str(ROOT / "examples" / "digits.py"), "--data", "digits", "--epochs", str(EPOCHS),
                 "--val-split", "0.1", "--quiet", "--json", "--report", str(digits)]) == 0
    model, _ = load_model(str(ROOT / "examples" / "kinks.py"))
    kinks = folder / "kinks.html"
    write(kinks, derivation_html(Formulas.of(derive(model))))
    return {"digits": digits, "kinks": kinks}


def _open(driver: object, path: Path) -> str:
    driver.get_log("browser")
    chromium.requests(driver)            # drop what the browser did before this page
    url = path.as_uri()
    driver.get(url)
    return url


def _background(driver: object, element: object) -> str:
    return driver.execute_script("return getComputedStyle(arguments[0]).backgroundColor", element)


def test_the_page_loads_from_disk_without_errors_or_requests(driver: object, pages: dict) -> None:
    for name in ("digits", "kinks"):
        url = _open(driver, pages[name])
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == [], f"{name}: {errors}"
        assert chromium.requests(driver) == [url], f"{name} made requests"
        count, fractions, bad = driver.execute_script(MATH_LAYOUT)
        assert count >= 15 and fractions >= 8 and bad == [], f"{name}: {bad[:5]}"


def test_the_diagram_and_the_curves_are_drawn(driver: object, pages: dict) -> None:
    _open(driver, pages["digits"])
    nodes = driver.execute_script("""
      return Array.from(document.querySelectorAll('svg.network g.node')).map(g => {
        const r = g.querySelector('rect').getBoundingClientRect();
        const texts = Array.from(g.querySelectorAll('text')).map(t => t.getBoundingClientRect());
        return {box: [r.left, r.top, r.right, r.bottom],
                inside: texts.every(t => t.width > 0 && t.left >= r.left - 0.5 && t.right <= r.right + 0.5)};
      });""")
    assert len(nodes) == 7 and all(n["inside"] for n in nodes)
    for i, a in enumerate(nodes):
        assert a["box"][2] > a["box"][0] and a["box"][3] > a["box"][1]
        for b in nodes[i + 1:]:
            assert a["box"][2] <= b["box"][0] or b["box"][2] <= a["box"][0] or \
                a["box"][3] <= b["box"][1] or b["box"][3] <= a["box"][1], "diagram boxes overlap"
    edges = driver.execute_script(
        "return Array.from(document.querySelectorAll('svg.network path.edge')).map(p => p.getTotalLength())")
    assert len(edges) == 6 and min(edges) > 20
    curves = driver.execute_script("""
      return Array.from(document.querySelectorAll('figure.chart polyline.series')).map(p =>
        [p.closest('figure').id, p.getAttribute('data-series'), p.points.numberOfItems, p.getTotalLength(),
         p.getBoundingClientRect().width]);""")
    assert {(c[0], c[1]) for c in curves} >= {("chart-loss", "training"), ("chart-loss", "validation"),
                                              ("chart-metric", "training"), ("chart-lr", "learning rate")}
    assert all(points == EPOCHS and length > 0 and width > 100 for _, _, points, length, width in curves)
    cells = driver.execute_script(
        "return Array.from(document.querySelectorAll('.heatmap rect.cell')).filter(r => r.getBBox().width > 0).length")
    assert cells > 0
    assert driver.find_element("css selector", "table.cm-table").is_displayed()


def test_formula_and_code_light_each_other_up(driver: object, pages: dict) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    _open(driver, pages["digits"])
    section = driver.find_element("css selector", "article[id^='d-dense1']")
    delta = next(r for r in section.find_elements("css selector", ".frow")
                 if r.find_element("css selector", ".label").text == "delta")
    ops = set(delta.get_attribute("data-ops").split())
    lines = section.find_elements("css selector", ".numpy .ln[data-ops]")
    lit = [ln for ln in lines if ln.get_attribute("data-ops") in ops]
    dark = [ln for ln in lines if ln.get_attribute("data-ops") not in ops]
    assert lit and dark
    plain = _background(driver, lit[0])
    ActionChains(driver).move_to_element(delta).perform()                 # hover: formula -> its lines
    assert all("hl" in ln.get_attribute("class") for ln in lit)
    assert _background(driver, lit[0]) != plain and _background(driver, dark[0]) == plain
    assert not any("hl" in ln.get_attribute("class") for ln in dark)
    square = next(ln for ln in driver.find_elements("css selector", "#code .ln")
                  if re.search(r"np.square\(a1, s\d+\)", ln.text))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", square)
    square.click()                                                         # click: line -> its formulas, pinned
    op = square.get_attribute("data-ops")
    pinned = driver.find_elements("css selector", ".frow.pin")
    labels = sorted(r.find_element("css selector", ".label").text for r in pinned)
    assert labels == ["delta", "derivative", "in steps"]
    assert all(op in r.get_attribute("data-ops").split() for r in pinned)
    graph = driver.find_elements("css selector", "table.graph tr.pin")
    assert [r.get_attribute("data-ops") for r in graph] == [op]
    launches = driver.find_elements("css selector", ".launch.pin")
    assert launches and all(launch.is_displayed() for launch in launches)   # its CUDA panel opened
    square.click()
    assert driver.find_elements("css selector", ".pin") == []


def test_a_screenshot_is_not_blank(driver: object, pages: dict, tmp_path: Path) -> None:
    from PIL import Image, ImageStat
    _open(driver, pages["digits"])
    shot = tmp_path / "digits.png"
    driver.save_screenshot(str(shot))
    image = Image.open(shot).convert("RGB")
    assert image.size[0] >= 1000
    stat = ImageStat.Stat(image.convert("L"))
    assert stat.stddev[0] > 20 and len(image.getcolors(1 << 20) or ()) > 200


def test_the_page_reads_the_same_without_javascript(driver: object, pages: dict) -> None:
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        _open(driver, pages["digits"])
        assert driver.execute_script is not None
        rows = driver.find_elements("css selector", ".frow")
        code = driver.find_elements("css selector", ".dsec .numpy .ln")
        assert len(rows) > 15 and all(r.is_displayed() for r in rows[:20])
        assert len(code) > 20 and all(c.is_displayed() for c in code[:20])
        link = driver.find_element("css selector", ".frow .refs a")
        target = link.get_attribute("href").split("#")[1]
        assert driver.find_element("id", target).text.startswith(target.split("-")[1])
        assert driver.find_elements("css selector", ".hl, .pin") == []
    finally:
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
