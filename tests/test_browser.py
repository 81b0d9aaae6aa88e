"""The course as a learner meets it: JupyterLab in a real (headless) Chromium driven by Playwright.

For a notebook: open it, Run All Cells, wait for the kernel, then move every slider on the page and
check that its explorer's figure changes. Screenshots go to ``test-artifacts/browser/``. Needs Debian's
``chromium`` (``.ci/run`` installs it); never downloads a browser.

The default run drives two short notebooks in JupyterLab whose explorers hold every kind of slider the
course uses: float sliders (06: β), a log slider (06: α), integer sliders (06, 07) and a selection slider
(07); and notebook 00, which the Binder demo badge opens, as a Voilà app (its float sliders ε and α).
Each chapter's explorer is moved slider by slider without a browser in ``tests/chapters``, and nbval
re-runs every notebook. Running all twelve in JupyterLab doubles the suite's time on two cores, so it is
opt-in: ``METAADV_BROWSER_ALL=1 pytest tests/test_browser.py`` (do it before a release, or after a change
to ``metaadv_edu/widgets.py``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
ALL_NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SAMPLE = ["06_reptile.ipynb", "07_meta_sgd.ipynb"]  # 00 runs as the Voilà demo below
DEMO = "00_start_here.ipynb"  # what the Binder demo badge opens (README)
# the sliders these explorers show: 00 ε, α; 06 α (log), k (integer), β (float); 07 model (selection), α scale, task
MINIMUM_SLIDERS = {DEMO: 2, "06_reptile.ipynb": 3, "07_meta_sgd.ipynb": 3}
NOTEBOOKS = ALL_NOTEBOOKS if os.environ.get("METAADV_BROWSER_ALL") == "1" else SAMPLE
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str, method: str = "GET"):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        body = resp.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One JupyterLab server for the module, on a copy of the notebooks and a private config."""
    base = tmp_path_factory.mktemp("lab")
    work = base / "notebooks"
    shutil.copytree(ROOT / "notebooks", work)
    env = {**os.environ}
    for var, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("MPLCONFIGDIR", "mpl"),
    ):
        env[var] = str(base / sub)
    # no "news" toast, no autosave over the copies
    settings = base / "settings" / "@jupyterlab"
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    (settings / "docmanager-extension").mkdir(parents=True)
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    # render every cell: with windowing, cells far from the viewport are hidden and cannot be clicked
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = _free_port(), secrets.token_hex(16)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={work}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(base / "server.log").open("w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            _get(f"{url}/api/status", token)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start: " + (base / "server.log").read_text()[-2000:])
    try:
        yield {"url": url, "token": token}
    finally:
        try:
            for session in _get(f"{url}/api/sessions", token) or []:
                _get(f"{url}/api/sessions/{session['id']}", token, method="DELETE")
        except OSError:
            pass
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _wait_idle(page, timeout_s: float) -> None:
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                 .some(e => e.textContent.includes('| Idle'))""",
        timeout=timeout_s * 1000,
    )


def _move(page, slider) -> None:
    """Press an arrow key on the slider's handle; left when it sits at its maximum."""
    readout = slider.locator(".widget-readout")
    before = readout.inner_text() if readout.count() else None
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(300)
    if readout.count() and readout.inner_text() == before:
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")


def _move_every_slider(page, root, name: str) -> None:
    """Move each slider under ``root`` one step and wait for its explorer's figure to change."""
    sliders = root.locator(".widget-slider")
    minimum = MINIMUM_SLIDERS.get(name, 1)
    sliders.nth(minimum - 1).wait_for(timeout=60_000)  # widgets are drawn after the page has loaded
    count = sliders.count()
    assert count >= minimum, f"{name}: {count} slider(s) on the page"
    for i in range(count):
        slider = sliders.nth(i)
        slider.scroll_into_view_if_needed()
        explorer = slider.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
        image = explorer.locator(".widget-image").first
        before = image.get_attribute("src")
        label = slider.locator(".widget-label").first.inner_text()
        _move(page, slider)
        page.wait_for_function(
            "([el, old]) => el.getAttribute('src') !== old", arg=[image.element_handle(), before], timeout=15_000
        )
        assert image.get_attribute("src") != before, f"{name}: slider {label!r} did not change the figure"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_slider_changes_the_figure(lab, browser, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        # a fresh workspace per notebook, so no tab of an earlier test is restored
        page.goto(f"{lab['url']}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={lab['token']}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        _wait_idle(page, 60)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        # every code cell has run when no prompt shows [*] and the kernel is idle again
        page.wait_for_function(
            """() => document.querySelectorAll('.jp-InputPrompt').length > 0 &&
                     ![...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'))""",
            timeout=240_000,
        )
        _wait_idle(page, 240)
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] "
            ".jp-RenderedText:has-text('Traceback')"
        )
        assert errors.count() == 0, f"{name}: a cell raised an error"
        _move_every_slider(page, page.locator(".jp-NotebookPanel:visible"), name)
        page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}.png"), full_page=True)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-failure.png"), full_page=True)
        raise
    finally:
        page.close()
        for session in _get(f"{lab['url']}/api/sessions", lab["token"]) or []:
            _get(f"{lab['url']}/api/sessions/{session['id']}", lab["token"], method="DELETE")


def test_voila_demo_renders_and_responds(browser, tmp_path):
    """The demo notebook served as a Voilà app, as the Binder demo badge opens it: no code, every slider live."""
    port = _free_port()
    work = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", work)
    voila = shutil.which("voila") or str(Path(sys.executable).parent / "voila")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
    }
    proc = subprocess.Popen(
        [
            voila,
            DEMO,
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            f"--Voila.root_dir={work}",
            "--strip_sources=True",
        ],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    try:
        deadline = time.time() + 120  # Voilà starts slowly on a busy 2-core machine
        while True:  # wait for the port only: every GET of the page would start a kernel and run the notebook
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        # Voilà streams the page while it runs the notebook: the load event comes only after the last cell,
        # so wait for the first bytes and then for the explorer's slider, not for the load event
        page.goto(f"http://127.0.0.1:{port}/", wait_until="commit", timeout=120_000)
        slider = page.locator(".widget-slider").first
        slider.wait_for(timeout=300_000)
        assert page.locator(".jp-InputArea-editor, .CodeMirror, .cm-editor").count() == 0, "code is shown"
        assert page.locator("mjx-container, .MathJax").count() > 0, "the derivation's equations are shown"
        page.wait_for_load_state("load", timeout=300_000)  # the last cell has run: every explorer is shown
        _move_every_slider(page, page.locator("body"), DEMO)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"voila_{Path(DEMO).stem}.png"), full_page=True)
    finally:
        page.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
