"""Takes the README's two screenshots of the HTML report: the digits model's derivation beside its
generated code (a formula pinned, its lines lit), and a 30-epoch training run (cosine schedule).

    python scripts/report_screenshots.py [docs/]

Needs headless Chromium, ChromeDriver and Selenium, as the browser tests do.
"""
from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import browser as chromium  # noqa: E402  (the tests' browser set-up)

from nncompile.cli import main as cli  # noqa: E402


def main(folder: Path) -> None:
    found = chromium.executables()
    if found is None:
        sys.exit(chromium.INSTALL)
    page = Path(tempfile.mkdtemp()) / "digits.html"
    with contextlib.redirect_stdout(io.StringIO()):
        trained = cli(["run", str(ROOT / "examples" / "digits.py"), "--data", "digits", "--val-split", "0.1",
                       "--schedule", "cosine", "--lr", "0.2", "--quiet", "--report", str(page)])
    if trained != 0:
        sys.exit("training failed")
    driver = chromium.start(*found)
    try:
        driver.set_window_size(1400, 2600)
        driver.get(page.as_uri())
        dense1 = driver.find_element("css selector", "article[id^='d-dense1']")
        delta = next(r for r in dense1.find_elements("css selector", ".frow")
                     if r.find_element("css selector", ".label").text == "delta")
        delta.click()
        driver.execute_script("document.activeElement.blur()")
        dense1.screenshot(str(folder / "report-derivation.png"))
        driver.find_element("id", "run").screenshot(str(folder / "report-training.png"))
    finally:
        driver.quit()
    print(f"wrote {folder / 'report-derivation.png'} and {folder / 'report-training.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs"))
