"""Make docs/short-answer.png, the README's picture of a report's short answer: the ``#answer`` section of
``reports/report.html`` rendered by headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium, as in tests/test_browser.py).

    .venv/bin/python docs/screenshot_answer.py [reports/report.html] [docs/short-answer.png]
"""

import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main(report: str = "reports/report.html", out: str = "docs/short-answer.png", width: int = 1000) -> None:
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                     f"--user-data-dir={profile}", f"--window-size={width},2000"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            driver.get(Path(report).resolve().as_uri())
            driver.find_element(By.ID, "answer").screenshot(out)
        finally:
            driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
