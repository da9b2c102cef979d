"""The labs in the real client: JupyterLab on localhost, driven in headless Chromium by Playwright.

For every lab: open it in JupyterLab, run its first cells (parameters, imports, the one-line environment
summary), check that the summary is printed and no cell failed, and save a screenshot. Lab 01 runs
to the end instead, and its ipywidgets panel must render and answer a click: a new dialogue picked
with the slider, "Generate" pressed, a new summary shown.

Needs Debian's `chromium` and the `playwright` package (`bash setup.sh --install-only --with-browser` installs both;
never Playwright's own browser download). Without them the tests skip, unless setup.sh recorded that
they were installed, in which case their absence is a failure, not a skip.

The labs run on the `tiny` profile from copies in a temporary folder: JupyterLab saves and writes
checkpoints, and nothing here may touch the notebooks in the repository. Screenshots go to
runs/browser-<time>/ (git ignores runs/).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from labhelpers.tools.labs import lab_notebooks

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = lab_notebooks()
INSTALLED_MARKER = Path(sys.prefix) / "labs-browser-tests"  # written by `bash setup.sh --with-browser`
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
# As root, in a closed network: no sandbox (needs user namespaces), and none of Chromium's own traffic.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
KERNEL_START_S = 180  # a kernel that imports torch and transformers on two busy cores
LAB01_RUN_ALL_S = 600
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook on show


def _missing() -> str | None:
    if CHROMIUM is None:
        return "Debian's chromium is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


MISSING = _missing()
if MISSING and INSTALLED_MARKER.exists():
    pytest.fail(f"setup.sh --with-browser was run, but {MISSING}; run `bash setup.sh --install-only --with-browser` again",
                pytrace=False)
pytestmark = pytest.mark.skipif(MISSING is not None,
                                reason=f"{MISSING}: `bash setup.sh --install-only --with-browser` installs the browser test's needs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab server on localhost over copies of the labs; yields (base url, token)."""
    root = tmp_path_factory.mktemp("lab")
    for nb in NOTEBOOKS:
        shutil.copy2(nb, root / nb.name)
    private = tmp_path_factory.mktemp("jupyter")
    env = {**os.environ, "LABS_PROFILE": "tiny", "JUPYTER_CONFIG_DIR": str(private / "config"),
           "JUPYTER_RUNTIME_DIR": str(private / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(private / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(private / "settings"), "OMP_NUM_THREADS": "1"}
    # Every cell stays in the page (JupyterLab's default hides cells scrolled out of view), and no news prompt.
    for plugin, settings in (("notebook-extension/tracker", '{"windowingMode": "none"}'),
                             ("apputils-extension/notification", '{"fetchNews": "false", "checkForUpdates": false}')):
        path = private / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings)
    port, token = _free_port(), secrets.token_hex(16)
    log = open(private / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.allow_root=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.news_url=None"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (private / "jupyterlab.log").read_text()[-3000:],
                            pytrace=False)
            time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = REPO / "runs" / f"browser-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def _lab_page(browser, jupyterlab, screenshots: Path, name: str):
    """A page with lab `name` open and its kernel idle; on failure a screenshot, then the kernel shut down."""
    page = _open(browser, jupyterlab, name)
    try:
        yield page
    except Exception:
        page.screenshot(path=str(screenshots / f"{Path(name).stem}-failure.png"))
        raise
    finally:
        page.close()
        _shut_down(jupyterlab, name)


def _open(browser, jupyterlab, name: str):
    """A page with the notebook open and its kernel started and idle."""
    url, token = jupyterlab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    # A workspace of its own: JupyterLab would otherwise reopen the labs opened before this one.
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?token={token}&reset")
    page.locator(f"{PANEL} .jp-Cell").first.wait_for()
    # The kernel is up when the server says so and the page has connected to it (the status bar says
    # "Idle"); before that, running cells does nothing at all.
    deadline = time.monotonic() + KERNEL_START_S
    while not any(s["path"] == name and s["kernel"]["execution_state"] == "idle" for s in _sessions(jupyterlab)):
        assert time.monotonic() < deadline, f"no idle kernel for {name} after {KERNEL_START_S} s"
        time.sleep(0.5)
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=KERNEL_START_S * 1000)
    return page


def _shut_down(jupyterlab, name: str) -> None:
    """Shut down the kernel of lab `name` (ten labs' kernels at once would hold gigabytes)."""
    url, token = jupyterlab
    for session in _sessions(jupyterlab):
        if session["path"] == name:
            request = urllib.request.Request(f"{url}/api/sessions/{session['id']}?token={token}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()


def _sessions(jupyterlab) -> list[dict]:
    url, token = jupyterlab
    with urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=10) as r:
        return json.load(r)


def _wait_idle(page, timeout_s: float) -> None:
    """Wait until the kernel has finished everything queued (no cell shows [*])."""
    deadline = time.monotonic() + timeout_s
    page.wait_for_timeout(500)
    while time.monotonic() < deadline:
        busy = page.locator(f'{PANEL} .jp-Notebook-ExecutionIndicator[data-status="busy"]').count()
        queued = page.locator(f"{PANEL} .jp-InputPrompt", has_text="[*]").count()
        if not busy and not queued:
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"the kernel was still busy after {timeout_s:.0f} s")


def _errors(page) -> list[str]:
    return page.locator(f'{PANEL} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]').all_inner_texts()


def _summary_line(page) -> str:
    summary = page.locator(f"{PANEL} .jp-OutputArea-output", has_text="| profile tiny |").first
    summary.wait_for(state="attached", timeout=KERNEL_START_S * 1000)
    return summary.inner_text()


@pytest.mark.parametrize("notebook", [nb.name for nb in NOTEBOOKS if not nb.name.startswith("01_")])
def test_lab_opens_and_its_first_cells_run(browser, jupyterlab, screenshots, notebook):
    with _lab_page(browser, jupyterlab, screenshots, notebook) as page:
        # Up to the cell that prints the environment summary: the title, Colab's install cell (a no-op
        # here), the parameters, the imports.
        cells = nbformat.read(str(REPO / "notebooks" / notebook), as_version=4).cells
        upto = next(i for i, c in enumerate(cells) if "environment_summary(" in c.source)
        page.locator(f"{PANEL} .jp-Cell").first.click()
        page.keyboard.press("Escape")  # command mode: Shift+Enter runs the cell and selects the next
        for _ in range(upto + 1):
            page.keyboard.press("Shift+Enter")
        line = _summary_line(page)
        _wait_idle(page, KERNEL_START_S)
        page.screenshot(path=str(screenshots / f"{Path(notebook).stem}.png"))
        assert "labhelpers" in line and "device" in line, line
        assert not _errors(page), _errors(page)
        ran = sum(c.cell_type == "code" for c in cells[:upto + 1])
        prompts = [p.strip() for p in page.locator(f"{PANEL} .jp-CodeCell .jp-InputPrompt").all_inner_texts()]
        assert prompts[:ran + 1] == [f"[{i}]:" for i in range(1, ran + 1)] + ["[ ]:"], prompts[:ran + 1]


def test_lab01_runs_and_its_widget_responds(browser, jupyterlab, screenshots):
    with _lab_page(browser, jupyterlab, screenshots, "01_in_context_learning.ipynb") as page:
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        _summary_line(page)
        _wait_idle(page, LAB01_RUN_ALL_S)
        assert not _errors(page), _errors(page)
        page.locator(f"{PANEL} .jp-OutputArea-output", has_text="lesson checks passed").first.wait_for(state="attached")

        button = page.locator(".widget-button", has_text="Generate")
        button.wait_for()
        output = page.locator(".jupyter-widgets.widget-output").first
        before = output.inner_text()
        assert "reference:" in before, before
        output.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshots / "01_in_context_learning.png"))

        # The "dialogue" slider: focus its handle and step it one to the right.
        slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text="dialogue")).first
        slider.locator(".noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")
        readout = slider.locator(".widget-readout").first
        page.wait_for_function("el => el.textContent.trim() === '1'", arg=readout.element_handle(), timeout=10_000)
        button.click()
        page.wait_for_function("([el, old]) => el.innerText.includes('reference:') && el.innerText !== old",
                               arg=[output.element_handle(), before], timeout=60_000)
        after = output.inner_text()
        page.screenshot(path=str(screenshots / "01_in_context_learning-widget.png"))
        assert after.split("reference:")[1] != before.split("reference:")[1], (before, after)
