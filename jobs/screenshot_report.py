"""Renders a snapshot's report.html in headless Chromium, as a reader sees it, and saves a screenshot.

    python -m corpusmill.jobs.screenshot_report SNAPSHOT_OR_REPORT [--out report.png] [--width 1280]

It drives Chromium through chromedriver's WebDriver protocol (Debian packages
``chromium`` and ``chromium-driver``; no Python client needed), with the
network switched off, so a page that fetched anything would show it. Besides
the full-page PNG it reports what a reader would trip on: elements wider than
the window (an overflowing table or plot), images that did not load, and the
page's size.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# The tallest window Chromium paints in one piece; a longer page is cut there (and says so).
MAX_HEIGHT = 16000

# Run in the page: its size and every element that sticks out to the right of the window, with
# every folded <details> opened (arguments[0]) or closed, as a reader first sees the page.
_MEASURE = """
document.querySelectorAll('details').forEach(d => { d.open = arguments[0]; });
const width = document.documentElement.clientWidth;
const wide = [];
for (const el of document.querySelectorAll('body *')) {
  const box = el.getBoundingClientRect();
  if (box.width > 0 && box.right > width + 1) {
    const parent = el.parentElement;
    if (parent && parent.getBoundingClientRect().right > width + 1) continue;  // report the outermost
    wide.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') + ' ' +
              Math.round(box.right) + 'px: ' + (el.textContent || '').trim().slice(0, 60));
  }
}
const broken = [...document.images].filter(img => !img.complete || img.naturalWidth === 0)
  .map(img => (img.alt || img.src.slice(0, 60)));
return {width: width, height: document.documentElement.scrollHeight, wide: wide, broken_images: broken,
        images: document.images.length, svgs: document.querySelectorAll('svg').length,
        title: document.title};
"""


@dataclass
class PageCheck:
    """What the browser showed.

    Attributes:
        png: Where the screenshot was written.
        width: The window's width in CSS pixels.
        height: The page's full height.
        wide: Elements reaching past the window's right edge (tag, right edge, text),
            folded sections opened.
        broken_images: Images that did not load.
        images: ``<img>`` elements on the page.
        svgs: Inline ``<svg>`` elements.
        title: The page title.
    """

    png: str
    width: int
    height: int
    wide: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    svgs: int = 0
    title: str = ""


def find_browser() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` paths, or None where either is missing."""
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(base: str, method: str, path: str, body: dict | None = None, timeout: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}").get("value")
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"chromedriver {method} {path}: {error.read().decode(errors='replace')[:500]}") from None


def screenshot(report: str, png: str, width: int = 1280) -> PageCheck:
    """Opens ``report`` (an HTML file) in headless Chromium and writes a full-page PNG to ``png``.

    Args:
        report: Path of the HTML page.
        png: Path of the screenshot to write.
        width: Window width in CSS pixels.

    Returns:
        The page's measurements (``PageCheck``).

    Raises:
        RuntimeError: Chromium or chromedriver is missing, or the browser failed.
    """
    found = find_browser()
    if found is None:
        raise RuntimeError("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    browser, driver = found
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    profile = tempfile.mkdtemp(prefix="corpusmill-chromium-")
    process = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (_call(base, "GET", "/status", timeout=2) or {}).get("ready"):
                    break
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--window-size={width},1000",
                # Offline, as the report must read: nothing may be fetched.
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
        created = _call(base, "POST", "/session", {"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": browser, "args": args}}}})
        session = created["sessionId"]
        _call(base, "POST", f"/session/{session}/url", {"url": Path(report).resolve().as_uri()})
        unfolded = _call(base, "POST", f"/session/{session}/execute/sync", {"script": _MEASURE, "args": [True]})
        measured = _call(base, "POST", f"/session/{session}/execute/sync", {"script": _MEASURE, "args": [False]})
        height = min(int(measured["height"]), MAX_HEIGHT)
        _call(base, "POST", f"/session/{session}/window/rect", {"width": width, "height": height})
        measured = _call(base, "POST", f"/session/{session}/execute/sync", {"script": _MEASURE, "args": [False]})
        measured["wide"] = sorted(set(measured["wide"]) | set(unfolded["wide"]))
        image = base64.b64decode(_call(base, "GET", f"/session/{session}/screenshot"))
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        Path(png).write_bytes(image)
        return PageCheck(png, int(measured["width"]), int(measured["height"]), list(measured["wide"]),
                         list(measured["broken_images"]), int(measured["images"]), int(measured["svgs"]),
                         str(measured["title"]))
    finally:
        if session is not None:
            try:
                _call(base, "DELETE", f"/session/{session}", timeout=10)
            except (OSError, RuntimeError):
                pass
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="a snapshot directory or its report.html")
    parser.add_argument("--out", default="report.png", help="PNG to write (default report.png)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default 1280)")
    args = parser.parse_args(argv)
    report = Path(args.report)
    if report.is_dir():
        report = report / "report.html"
    check = screenshot(str(report), args.out, args.width)
    print(f"wrote {check.png}: {check.width} x {check.height} px, {check.svgs} plots (svg), {check.images} images")
    for problem in [*(f"wider than the window: {w}" for w in check.wide),
                    *(f"image not loaded: {i}" for i in check.broken_images)]:
        print(f"PROBLEM: {problem}")
    return 1 if check.wide or check.broken_images else 0


if __name__ == "__main__":
    sys.exit(main())
