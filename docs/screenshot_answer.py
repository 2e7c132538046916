"""Make docs/short-answer.png, the README's picture of a report's first screen: what a 1280x900 browser window
shows of ``reports/default/report.html`` before any scrolling (the title, the bottom line and the headline
figure), rendered by headless Chromium (Debian's chromium + chromium-driver, driven by Selenium, as in
tests/test_browser.py).

    .venv/bin/python docs/screenshot_answer.py [reports/default/report.html] [docs/short-answer.png]
"""

import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

WIDTH, HEIGHT = 1280, 900  # the viewport, CSS px


def main(report: str = "reports/default/report.html", out: str = "docs/short-answer.png") -> None:
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                     f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(Path(report).resolve().as_uri())
            frame = driver.execute_script("return window.outerHeight - window.innerHeight")
            driver.set_window_size(WIDTH, HEIGHT + frame)  # the viewport, not the window, is WIDTH x HEIGHT
            driver.save_screenshot(out)
        finally:
            driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
