"""labhelpers/tools/torch_build.py: which PyTorch build setup.sh installs, on stand-in machines.

What cannot be tested here: a real install from PyTorch's CPU index (this machine reaches PyPI only), and a
real NVIDIA driver (a stand-in nvidia-smi answers instead).
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labhelpers.tools import torch_build

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "labhelpers" / "tools" / "torch_build.py"


class Probe:
    """A stand-in for the index probe that counts its calls."""

    def __init__(self, reachable: bool):
        self.reachable, self.calls = reachable, 0

    def __call__(self):
        self.calls += 1
        return self.reachable, "stand-in"


def test_torch_pin_is_read_from_a_requirements_file(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# comment torch==0.0.1\ntorchvision==0.29.0\ntorch == 2.13.0  # the CPU build\nnumpy==2.4.6\n")
    assert torch_build.torch_pin(req) == "2.13.0"
    req.write_text("numpy==2.4.6\ntorch>=2.4\n")
    with pytest.raises(ValueError, match="torch==<version>"):
        torch_build.torch_pin(req)
    pinned = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("torch==")]
    assert pinned == [f"torch=={torch_build.torch_pin(REPO / 'requirements.txt')}"]


def test_linux_without_gpu_takes_the_cpu_index_when_it_answers():
    probe = Probe(True)
    build, args, why = torch_build.choose("Linux", False, "2.13.0", probe)
    assert (build, args) == ("cpu", ["torch==2.13.0", "--index-url", torch_build.CPU_INDEX])
    assert probe.calls == 1 and "no NVIDIA GPU" in why


def test_linux_without_gpu_falls_back_to_the_pin_when_the_index_is_unreachable():
    probe = Probe(False)
    build, args, why = torch_build.choose("Linux", False, "2.13.0", probe, cpu_index="http://nowhere/cpu")
    assert (build, args) == ("default", []) and probe.calls == 1
    assert "http://nowhere/cpu cannot be reached (stand-in" in why and "torch==2.13.0" in why


@pytest.mark.parametrize("system, gpu, expected", [("Linux", True, ("cuda", ["torch==2.13.0"])),
                                                   ("Darwin", False, ("default", [])),
                                                   ("Windows", True, ("default", []))])
def test_gpu_and_other_systems_never_ask_the_cpu_index(system, gpu, expected):
    probe = Probe(False)
    build, args, _ = torch_build.choose(system, gpu, "2.13.0", probe)
    assert (build, args) == expected and probe.calls == 0


@pytest.mark.parametrize("installed, gpu, expected", [("2.13.0+cpu", False, "keep"),
                                                      ("2.13.0", False, "cpu"),        # the CUDA build on a CPU machine
                                                      ("2.12.0+cpu", False, "cpu"),    # another version
                                                      ("2.13.0+cpu", True, "cuda"),    # the CPU build on a GPU machine
                                                      ("2.13.0", True, "keep"),
                                                      ("2.13.0+cu130", True, "keep")])
def test_an_installed_torch_is_kept_only_when_it_is_the_pin_and_the_build_wanted(installed, gpu, expected):
    probe = Probe(True)
    build, args, _ = torch_build.choose("Linux", gpu, "2.13.0", probe, installed=installed)
    assert build == expected
    assert probe.calls == (1 if expected == "cpu" else 0) and (args == [] if expected == "keep" else args)


def test_labs_torch_overrides_the_choice_and_a_wrong_value_is_refused():
    probe = Probe(True)
    assert torch_build.choose("Linux", False, "2.13.0", probe, forced="default")[:2] == ("default", [])
    assert torch_build.choose("Darwin", False, "2.13.0", probe, forced="cuda")[:2] == ("cuda", ["torch==2.13.0"])
    assert probe.calls == 0
    assert torch_build.choose("Linux", True, "2.13.0", probe, forced="cpu")[0] == "cpu" and probe.calls == 1
    with pytest.raises(ValueError, match="LABS_TORCH='gpu'"):
        torch_build.choose("Linux", False, "2.13.0", probe, forced="gpu")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def index_server():
    """A local HTTP server with a page at /cpu/torch/ (what a package index serves)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200 if self.path == "/cpu/torch/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_index_probe_answers_yes_no_and_gives_up_on_time(index_server):
    assert torch_build.index_reachable(index_server + "/cpu") == (True, "reachable")
    assert torch_build.index_reachable(index_server + "/elsewhere") == (False, "HTTP 404")
    reachable, why = torch_build.index_reachable(f"http://127.0.0.1:{_closed_port()}/cpu")
    assert not reachable and "refused" in why.lower()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        reachable, why = torch_build.index_reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/cpu", timeout_s=0.5)
        assert not reachable and time.monotonic() - start < 2


def _fake_nvidia_smi(folder: Path, script: str) -> str:
    folder.mkdir(exist_ok=True)
    fake = folder / "nvidia-smi"
    fake.write_text("#!/bin/sh\n" + script + "\n")
    fake.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def test_gpu_detection_reads_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "gpu", 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)"'))
    assert torch_build.has_nvidia_gpu()
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path / "nodriver", 'echo "NVIDIA-SMI has failed"; exit 9'))
    assert not torch_build.has_nvidia_gpu()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not torch_build.has_nvidia_gpu()


def test_script_runs_on_the_standard_library_alone_and_falls_back_within_seconds(tmp_path):
    """As setup.sh runs it: the interpreter in isolated mode (no site-packages), the index unreachable."""
    env = {"PATH": _fake_nvidia_smi(tmp_path / "bin", "exit 9"),
           "LABS_TORCH_CPU_INDEX": f"http://127.0.0.1:{_closed_port()}/cpu"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), "--installed", ""], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 10
    assert proc.stdout == "default\n"
    assert "torch build: default" in proc.stderr and "cannot be reached" in proc.stderr
    proc = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT)], capture_output=True, text=True,
                          env={**env, "LABS_TORCH": "gpu"}, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
