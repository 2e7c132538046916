"""The quick DAG's report opened in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by tests/system_deps.sh) driven by Selenium.

The page must load with no console error, every image must decode (naturalWidth > 0), the short answer and
the Q1-Q5 sections must be there, nothing may be fetched over http(s), and the page must stay readable on a
400 px wide screen. The first screen answers (issue 22): in a 1280 x 900 viewport, before any scrolling, lie the
bottom line (``#bottom-line``: 2-5 sentences, each linking to its section) and the headline figure
(``#headline img``, decoded); each question section q1-q5 opens with its figure (``figure.question-figure``,
decoded, before the section's first table). Screenshots are saved beside the report:
``<quick root>/reports/quick/report-screenshot.png`` (the full page) and ``report-first-screen.png``.

Selenium never downloads anything: the chromedriver path is given explicitly and SE_OFFLINE=true keeps
Selenium Manager offline. A missing chromium / chromedriver is an error, not a skip.
"""

import shutil
import struct
from pathlib import Path

import pytest
from conftest import QUICK, study_folders
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
QUESTIONS = ["q1", "q2", "q3", "q4", "q5"]
SECTIONS = ["answer", *QUESTIONS]
FIRST_SCREEN = (1280, 900)  # the viewport, CSS px, in which the answer must lie before any scrolling
BOTTOM_LINE_SENTENCES = (2, 5)
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    # nothing outside the machine is resolvable: a report that reaches out fails fast instead of hanging
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
]
PAGE_LOAD_TIMEOUT_S = 60
MAX_SHOT = (1400, 20000)  # full-page screenshot size cap, CSS px
NARROW_W, NARROW_SLACK = 400, 20
MIN_SHOT_BYTES = 10_000


class Page:
    """A loaded report in one Chromium; ``console()`` returns every browser-log entry seen so far."""

    def __init__(self, driver: webdriver.Chrome, root: Path):
        self.driver, self.root, self._log, self._frame_h = driver, root, [], 0

    def console(self) -> list[dict]:
        self._log.extend(self.driver.get_log("browser"))
        return list(self._log)

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def viewport(self) -> tuple[int, int]:
        return tuple(self.js("return [window.innerWidth, window.innerHeight]"))

    def _set_window(self, width: int, height: int) -> None:
        """Resize the window and wait until the page sees it (the resize can reach the renderer late)."""
        self.driver.set_window_size(width, height)
        try:
            WebDriverWait(self.driver, 15, poll_frequency=0.1).until(
                lambda d: d.execute_script("return [window.innerWidth, window.outerHeight]") == [width, height])
        except TimeoutException:
            pass  # the caller checks the viewport it got

    def resize(self, width: int, height: int) -> tuple[int, int]:
        """Make the viewport (not the outer window) width x height CSS px; returns the viewport it got.
        Headless Chromium's window is taller than its viewport by a fixed frame, measured on first use."""
        self._set_window(width, height + self._frame_h)
        frame_h = self.js("return window.outerHeight - window.innerHeight")
        if frame_h != self._frame_h:
            self._frame_h = frame_h
            self._set_window(width, height + frame_h)
        return self.viewport()


def make_driver(profile: Path, log: Path) -> webdriver.Chrome:
    for exe, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(exe).exists():
            pytest.fail(f"{exe} is missing: install Debian's {pkg} (`bash tests/system_deps.sh` as root, "
                        f"which `make test` runs)")
    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(log))
    return webdriver.Chrome(options=opts, service=service)


@pytest.fixture(scope="module")
def page(quick, tmp_path_factory):
    """The quick report loaded in headless Chromium (one browser for the module, quit in any case)."""
    root = quick[0]
    report = study_folders(root, QUICK).report
    assert report.is_file(), report
    tmp = tmp_path_factory.mktemp("chromium")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must never go looking for a driver or a browser
        driver = make_driver(tmp / "profile", tmp / "chromedriver.log")
        try:
            driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
            driver.set_script_timeout(30)
            p = Page(driver, root)
            p.resize(1280, 1000)
            driver.get(report.as_uri())
            wait = WebDriverWait(driver, PAGE_LOAD_TIMEOUT_S)
            wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
            wait.until(lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
            p.console()  # collect the entries of the load now
            yield p
        finally:
            driver.quit()


def test_no_console_errors(page):
    entries = page.console()
    for e in entries:
        print(f"console {e.get('level')}: {e.get('message')}")
    severe = [e["message"] for e in entries if e.get("level") == "SEVERE"]
    assert not severe, "console errors:\n" + "\n".join(severe)


def test_every_image_decodes(page):
    images = page.js("""return Array.from(document.images).map(i => ({
        alt: i.alt, src: i.src.slice(0, 40), complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}))""")
    assert images, "the report has no <img>"
    broken = [i for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not broken, "images that did not decode (alt text, src start):\n" + "\n".join(
        f"  {i['alt']!r} {i['src']!r}" for i in broken)


def test_answer_and_question_sections_are_there(page):
    found = page.js("""return arguments[0].map(id => {
        const e = document.getElementById(id);
        return e === null ? null : e.textContent.trim().length; })""", SECTIONS)
    missing = [s for s, n in zip(SECTIONS, found, strict=True) if n is None]
    empty = [s for s, n in zip(SECTIONS, found, strict=True) if n == 0]
    assert not missing, f"no element with id {missing} in the report"
    assert not empty, f"elements with id {empty} are empty"


def test_nothing_is_fetched_over_the_network(page):
    names = page.js("return performance.getEntriesByType('resource').map(e => e.name)")
    names += page.js("return performance.getEntriesByType('navigation').map(e => e.name)")
    remote = [n for n in names if not n.startswith(("data:", "file:"))]
    assert not remote, f"the report fetched: {remote}"


def test_the_answer_is_on_the_first_screen(page):
    """At 1280 x 900, scrolled to the top: the bottom line and the decoded headline figure lie wholly in the
    viewport; every sentence of the bottom line links to a section that exists. Saves report-first-screen.png."""
    got = page.resize(*FIRST_SCREEN)
    assert got == FIRST_SCREEN, f"could not make the viewport {FIRST_SCREEN}: {got}"
    page.js("window.scrollTo(0, 0)")
    shot = study_folders(page.root, QUICK).reports / "report-first-screen.png"
    shot.unlink(missing_ok=True)
    assert page.driver.save_screenshot(str(shot)), shot
    seen = page.js("""
        const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
            return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height}; };
        const img = document.querySelector('#headline img');
        return {
            bottom_line: box(document.getElementById('bottom-line')),
            headline: box(img),
            decoded: img ? img.complete && img.naturalWidth > 0 && img.naturalHeight > 0 : false,
            sentences: Array.from(document.querySelectorAll('#bottom-line > li')).map(li => ({
                text: li.textContent.trim().slice(0, 80),
                links: Array.from(li.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href')),
                broken: Array.from(li.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href'))
                    .filter(h => document.getElementById(h.slice(1)) === null)}))};""")
    vw, vh = got
    outside = {name: b for name, b in (("#bottom-line", seen["bottom_line"]), ("#headline img", seen["headline"]))
               if b is not None and not (b["top"] >= 0 and b["left"] >= 0 and b["bottom"] <= vh and b["right"] <= vw)}
    assert seen["bottom_line"] is not None, "no element with id bottom-line in the report"
    assert seen["headline"] is not None, "no <img> in the element with id headline"
    assert seen["decoded"], "the headline figure did not decode"
    assert seen["headline"]["width"] > 0 and seen["headline"]["height"] > 0, seen["headline"]
    assert not outside, (f"not wholly inside the first {vw} x {vh} viewport (boxes in CSS px): {outside}; "
                         f"see {shot}")
    sentences = seen["sentences"]
    lo, hi = BOTTOM_LINE_SENTENCES
    assert lo <= len(sentences) <= hi, f"the bottom line has {len(sentences)} sentences (<li>): {sentences}"
    unlinked = [x["text"] for x in sentences if not x["links"]]
    broken = [h for x in sentences for h in x["broken"]]
    assert not unlinked, f"sentences of the bottom line without a link to their section: {unlinked}"
    assert not broken, f"links of the bottom line to no element: {broken}"


def test_every_question_section_opens_with_a_figure(page):
    """Each of q1-q5 holds a decoded <img> in a figure.question-figure, which comes before the section's first
    table (the figure that carries the question, then its claims)."""
    found = page.js("""return arguments[0].map(id => {
        const s = document.getElementById(id);
        if (s === null) return {id: id, missing: true};
        const fig = s.querySelector('figure.question-figure');
        const imgs = Array.from(s.querySelectorAll('figure.question-figure img'));
        const table = s.querySelector('table');
        return {id: id, missing: false, images: imgs.length,
                decoded: imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
                first: fig !== null && (table === null ||
                       (fig.compareDocumentPosition(table) & Node.DOCUMENT_POSITION_FOLLOWING) !== 0)}; })""",
                    QUESTIONS)
    missing = [f["id"] for f in found if f["missing"]]
    assert not missing, f"no element with id {missing} in the report"
    without = [f["id"] for f in found if f["images"] == 0]
    assert not without, f"question sections without an <img> in a figure.question-figure: {without}"
    undecoded = [f["id"] for f in found if f["decoded"] < f["images"]]
    assert not undecoded, f"question sections whose figure did not decode: {undecoded}"
    late = [f["id"] for f in found if not f["first"]]
    assert not late, f"question sections whose figure comes after a table: {late}"


def test_full_page_screenshot(page):
    """Window = the whole document (capped), then one screenshot: reports/quick/report-screenshot.png."""
    page.resize(1280, 1000)
    w, h = page.js("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    got = page.resize(min(w, MAX_SHOT[0]), min(h, MAX_SHOT[1]))
    shot = study_folders(page.root, QUICK).reports / "report-screenshot.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    assert page.driver.save_screenshot(str(shot)), shot
    size = shot.stat().st_size if shot.exists() else 0
    print(f"screenshot {shot} ({size} bytes) of a {w} x {h} px document at viewport {got[0]} x {got[1]}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    dpr = page.js("return window.devicePixelRatio")
    assert struct.unpack(">II", png[16:24]) == (round(got[0] * dpr), round(got[1] * dpr))
    assert got == (min(w, MAX_SHOT[0]), min(h, MAX_SHOT[1])), f"viewport {got} for a {w} x {h} px document"
    assert size > MIN_SHOT_BYTES, size


def test_readable_on_a_narrow_screen(page):
    """At 400 px the page does not scroll sideways (wide tables and code scroll inside their own box)."""
    got = page.resize(NARROW_W, 900)
    assert got[0] <= NARROW_W + NARROW_SLACK, f"could not make the viewport {NARROW_W} px wide: {got}"
    width = page.js("return document.documentElement.scrollWidth")
    if width > NARROW_W + NARROW_SLACK:
        wide = page.js("""
            const vw = document.documentElement.clientWidth;
            const over = e => { const r = e.getBoundingClientRect();  // the box, or its content spilling out
                const spill = getComputedStyle(e).overflowX === 'visible' ? r.left + e.scrollWidth : 0;
                return Math.max(r.right, spill) > vw + 1; };
            const clipped = e => { for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
                if (getComputedStyle(a).overflowX !== 'visible') return true; return false; };
            const bad = Array.from(document.body.querySelectorAll('*')).filter(e => over(e) && !clipped(e));
            return bad.filter(e => !bad.includes(e.parentElement)).slice(0, 20).map(e => {
                const r = e.getBoundingClientRect(), cs = getComputedStyle(e);
                return `<${e.tagName.toLowerCase()}${e.id ? ' id=' + e.id : ''}` +
                       `${e.className ? ' class=' + e.className : ''}> left=${Math.round(r.left)} ` +
                       `width=${Math.round(r.width)} content=${e.scrollWidth} display=${cs.display} ` +
                       `overflow-x=${cs.overflowX} white-space=${cs.whiteSpace} ` +
                       `"${(e.textContent || '').trim().slice(0, 60)}"`; });""")
        pytest.fail(f"at a {got[0]} px wide viewport the page is {width} px wide; outermost too-wide elements:\n"
                    + "\n".join(f"  {x}" for x in wide))
