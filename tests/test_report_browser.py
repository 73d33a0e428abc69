"""report.html in a real browser (headless Chromium): every image loads and the page is not blank, for a
plain run, a run with theory, a 2-D grid (heat maps, small multiples) and a 1-generation, 1-seed run.

Needs Debian's ``chromium`` (``.ci/run`` installs it with apt); where no browser is present the test skips
and says why. Serving the run over localhost keeps the page same-origin with the checking wrapper.
"""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from collapselab.cli import main

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian package `chromium`; "
                                                        ".ci/run installs it with apt)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--disable-dev-shm-usage"]

CHECK = """<!doctype html><html><body><iframe id="r" src="run/report.html" style="width:1280px;height:2000px">
</iframe><script>
document.getElementById('r').addEventListener('load', () => {
  const d = document.getElementById('r').contentDocument;
  const imgs = [...d.images];
  const out = document.createElement('pre');
  out.id = 'result';
  out.textContent = 'RESULT' + JSON.stringify({
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    widths: imgs.map(i => i.naturalWidth), text: d.body.innerText.length,
    tables: d.querySelectorAll('table').length, details: d.querySelectorAll('details').length}) + 'END';
  document.body.appendChild(out);
});
</script></body></html>"""

RUNS = {
    "quickstart": ["quickstart", "--set", "n=60", "--set", "heldout=100", "--generations", "5", "--seeds", "3"],
    "theory": ["shumailov-gaussian", "--seeds", "20", "--generations", "20"],
    "grid": ["yi-linear-one-round", "--seeds", "10"],
    "one-generation-one-seed": ["quickstart", "--set", "n=60", "--set", "heldout=100", "--generations", "1",
                                "--seeds", "1"],
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(root: Path):
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _browser(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HOME": str(tmp)})


@pytest.mark.parametrize("name", list(RUNS))
def test_report_renders_in_chromium_with_every_image(name, tmp_path):
    main(["run", *RUNS[name], "--out", str(tmp_path / "run"), "-q"])  # raises SystemExit on failure
    (tmp_path / "check.html").write_text(CHECK)
    server = _serve(tmp_path)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        dom = _browser(tmp_path, "--virtual-time-budget=15000", "--dump-dom", f"{url}/check.html")
        shot = _browser(tmp_path, "--window-size=1280,2400", f"--screenshot={tmp_path / 'shot.png'}",
                        f"{url}/run/report.html")
    finally:
        server.shutdown()
    found = re.search(r'<pre id="result">RESULT(.*?)END</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    figures = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    assert result["images"] == len(figures) >= 2
    assert result["broken"] == [] and min(result["widths"]) > 300
    assert result["text"] > 500 and result["tables"] >= 1 and result["details"] == 1
    if name == "grid":
        assert "heatmap_param_error.png" in figures
    # the screenshot is not blank: a good share of its pixels are not background
    assert shot.returncode == 0, shot.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(tmp_path / "shot.png")[..., :3]
    assert (np.abs(pixels - 1.0).max(axis=-1) > 0.1).mean() > 0.03
