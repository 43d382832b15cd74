"""The report of a tiny run in a real headless browser: every image and plot decodes, the slider works, no console
error, and a screenshot is taken. Skips where no Chromium/Chrome is installed (tools/test.sh says how to get one)."""

import copy
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from pgan_tiny import TINY_PGAN
from PIL import Image

import ganforge
from ganforge.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL = "apt-get update && apt-get install -y chromium"

# Injected into a copy of the page: counts errors from the first script on, and once everything has loaded writes
# what it found into the DOM, which --dump-dom prints.
CATCH_ERRORS = """<script>window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e.target.src)); }, true);
var __consoleError = console.error;
console.error = function () {
  window.__errors.push([].join.call(arguments, ' ')); __consoleError.apply(console, arguments);
};
</script>"""
CHECK_PAGE = """<script>window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var slider = document.querySelector('.slider input'), frames = document.querySelectorAll('.frame');
  var lastShown = !frames[frames.length - 1].hidden;
  slider.value = 0; slider.dispatchEvent(new Event('input'));
  var sliderWorks = lastShown && !frames[0].hidden && frames[frames.length - 1].hidden;
  var result = document.createElement('pre');
  result.id = 'render-check';
  result.textContent = 'images ' + decoded + '/' + images.length + ' slider ' + sliderWorks +
    ' errors ' + window.__errors.length + ': ' + window.__errors.join(' | ');
  document.body.appendChild(result);
});</script>"""


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"no headless browser found (looked for {', '.join(BROWSERS)}); install Chromium: {INSTALL}")


def run_browser(browser: str, profile, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(tmp_path):
    browser = find_browser()
    run = tmp_path / "run"
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd"], metrics_every=16, metrics_n=64, best_metric="swd_avg")
    ganforge.train(config, run)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from the network
    expected_images = page.count("<img")
    assert expected_images == 4 + 3 * 2 + 2  # plots; EMA and G grids at steps 8, 16, 20; real and generated

    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("<head>", "<head>" + CATCH_ERRORS, 1).replace("</body>", CHECK_PAGE + "</body>"))
    result = run_browser(browser, tmp_path / "profile", "--virtual-time-budget=15000", "--dump-dom",
                         checked.as_uri())
    found = re.search(r'<pre id="render-check">([^<]*)</pre>', result.stdout)
    assert found, f"the check script did not run; browser said: {result.stderr[-2000:]}"
    assert found.group(1) == f"images {expected_images}/{expected_images} slider true errors 0: "
    assert not re.search(r"Uncaught|CONSOLE.*(Error|error)", result.stderr), result.stderr[-2000:]

    screenshot = tmp_path / "report.png"
    result = run_browser(browser, tmp_path / "profile", "--virtual-time-budget=15000", "--window-size=1280,2400",
                         f"--screenshot={screenshot}", (run / "report.html").as_uri())
    assert screenshot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2400, 1280) and pixels.std() > 20  # curves and grids drawn, not a blank page
    if os.environ.get("GANFORGE_REPORT_SCREENSHOT"):  # e.g. docs/report_screenshot.png
        shutil.copyfile(screenshot, os.environ["GANFORGE_REPORT_SCREENSHOT"])
