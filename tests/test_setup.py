"""setup.sh, run on a copy of itself whose .venv/bin/python is a stand-in that logs what it is asked to do.

Checks the options (the embedded run by default, --quick, --install-only), the torch build it installs
(the CPU index when it answers, the fallback within seconds when it does not, the CUDA build with a GPU),
and .ci/run's calls. Nothing is installed and no lab runs.
"""

from __future__ import annotations

import http.server
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PIN = re.search(r"^torch==([\w.]+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)

STAND_IN_PYTHON = """#!/bin/sh
echo "$*" >> "$SETUP_LOG"
case "$*" in *importlib.metadata*) [ -n "$FAKE_TORCH" ] && echo "$FAKE_TORCH"; exit 0 ;; esac
exit 0
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def checkout(tmp_path):
    """A copy of setup.sh, requirements.txt and torch_build.py with a stand-in .venv and PATH."""
    root = tmp_path / "repo"
    (root / "labhelpers" / "tools").mkdir(parents=True)
    for name in ("setup.sh", "requirements.txt", "labhelpers/tools/torch_build.py"):
        shutil.copy(REPO / name, root / name)
    (root / ".venv" / "bin").mkdir(parents=True)
    python = root / ".venv" / "bin" / "python"
    python.write_text(STAND_IN_PYTHON)
    python.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": sys.executable, "SETUP_LOG": str(log),
           "HOME": str(tmp_path), "LABS_TORCH_CPU_INDEX": f"http://127.0.0.1:{_closed_port()}/cpu"}
    gpu(bin_dir, False)

    def run(*options, **extra_env):
        log.write_text("")
        start = time.monotonic()
        proc = subprocess.run(["bash", str(root / "setup.sh"), *options], capture_output=True, text=True,
                              env={**env, **extra_env}, timeout=120)
        proc.seconds = time.monotonic() - start
        proc.calls = log.read_text().splitlines()
        return proc

    run.bin_dir = bin_dir
    return run


def gpu(bin_dir: Path, present: bool) -> None:
    """A stand-in nvidia-smi: lists one GPU, or fails as it does without a driver."""
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\n" + ('echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"' if present else "exit 9") + "\n")
    fake.chmod(0o755)


def _labs_runs(calls):
    return [c for c in calls if c.startswith("-m labhelpers.tools.labs run")]


def _torch_installs(calls):
    return [c for c in calls if c.startswith("-m pip install") and f"torch=={PIN}" in c]


def test_the_first_command_runs_every_lab_on_embedded(checkout):
    proc = checkout()
    assert proc.returncode == 0, proc.stderr
    assert _labs_runs(proc.calls) == ["-m labhelpers.tools.labs run --profile embedded"]
    assert "-m pip install --quiet -r requirements.txt" in proc.calls
    assert "labs ran in" in proc.stdout


def test_quick_runs_tiny_and_install_only_runs_nothing(checkout):
    assert _labs_runs(checkout("--quick").calls) == ["-m labhelpers.tools.labs run --profile tiny"]
    assert _labs_runs(checkout(LABS_PROFILE="course").calls) == ["-m labhelpers.tools.labs run --profile course"]
    proc = checkout("--install-only")
    assert proc.returncode == 0 and _labs_runs(proc.calls) == [] and "-m pip install --quiet -r requirements.txt" in proc.calls


def test_an_unknown_option_is_refused_in_one_line_before_anything_runs(checkout):
    proc = checkout("--run-everything")
    assert proc.returncode == 2 and proc.calls == []
    assert len(proc.stderr.strip().splitlines()) == 1 and "--quick" in proc.stderr and "--install-only" in proc.stderr


def test_without_gpu_and_without_the_cpu_index_it_falls_back_to_the_pin_within_seconds(checkout):
    proc = checkout("--install-only")
    assert proc.returncode == 0, proc.stderr
    assert _torch_installs(proc.calls) == []  # requirements.txt brings the pinned torch
    assert "torch build: default" in proc.stderr and "cannot be reached" in proc.stderr
    assert proc.seconds < 15


def test_without_gpu_it_installs_the_cpu_wheels_from_the_cpu_index(checkout):
    class Index(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cpu"
        proc = checkout("--install-only", LABS_TORCH_CPU_INDEX=url)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert _torch_installs(proc.calls) == [f"-m pip install --quiet --timeout 20 --retries 1 torch=={PIN} --index-url {url}"]
    assert proc.calls.index(_torch_installs(proc.calls)[0]) < proc.calls.index("-m pip install --quiet -r requirements.txt")
    assert "torch build: cpu" in proc.stderr


def test_with_a_gpu_it_installs_the_cuda_build_and_keeps_a_fitting_torch(checkout):
    gpu(checkout.bin_dir, True)
    proc = checkout("--install-only")
    assert _torch_installs(proc.calls) == [f"-m pip install --quiet torch=={PIN}"]
    assert "torch build: cuda" in proc.stderr
    proc = checkout("--install-only", FAKE_TORCH=PIN)
    assert _torch_installs(proc.calls) == [] and "torch build: keep" in proc.stderr


def test_ci_installs_without_running_labs_then_runs_the_readme_test_command():
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-2:] == ["bash setup.sh --install-only --with-browser", ".venv/bin/python -m pytest"]
    readme = (REPO / "README.md").read_text()
    assert "```bash\nbash setup.sh" in readme and ".venv/bin/python -m pytest" in readme


def test_readme_puts_the_student_first():
    """What it is, the two commands, opening the labs, profiles, runtimes, troubleshooting; then instructors and CI."""
    from labhelpers.tools.publish import STUDENT_PART_END

    readme = (REPO / "README.md").read_text()
    order = ["## Two commands", "## Open the labs", "## Profiles", "## How long each lab takes", "## Troubleshooting",
             STUDENT_PART_END, "## For instructors", "## Tests and CI"]
    positions = [readme.index(heading) for heading in order]
    assert positions == sorted(positions), "README sections out of order"
    student, rest = readme.split(STUDENT_PART_END)
    assert "grading" not in student.lower().replace("graded", "") and "chromium" not in student.lower()
    assert "oneDNN" not in student and "oneDNN" in rest and "python -m labhelpers.tools.publish" in rest
    trouble = student[student.index("## Troubleshooting"):]
    for topic in ("3.11", "LABS_TORCH", "4 GiB", "`course` without network", 'if_exists="resume"', "WSL2", "MPS"):
        assert topic in trouble, f"troubleshooting says nothing about {topic}"
    table = student[student.index("## How long each lab takes"):student.index("## Troubleshooting")]
    labs = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows = re.findall(r"^\| (\d\d_\w+) \| ([\d.]+) \| ([\d.]+) \| (.+) \|$", table, re.M)
    assert [r[0] for r in rows] == labs, "the runtime table needs one row per lab"
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", table), "the runtime table must say when it was measured"
    totals = re.search(r"\*\*all ten\*\* \| \*\*([\d.]+)\*\* \| \*\*([\d.]+)\*\*", table)
    for column in (1, 2):
        assert abs(sum(float(r[column]) for r in rows) - float(totals.group(column))) < 1.0
