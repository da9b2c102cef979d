"""Which PyTorch build setup.sh installs: `python labhelpers/tools/torch_build.py [--requirements FILE]`.

Standard library only: setup.sh runs this file with the system Python, before anything is installed.
It prints one line for setup.sh, `<build> [pip arguments]`, and says on stderr what it chose and why:

    cpu torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu   # Linux, no NVIDIA GPU, index reachable
    cuda torch==2.13.0                                                   # Linux with an NVIDIA GPU: PyPI's CUDA build
    default                                                              # the pin in requirements.txt as pip finds it
    keep                                                                 # the installed torch already fits

On Linux x86_64, PyPI's torch wheel is the CUDA build: 2.7 GB of wheels with its NVIDIA libraries and triton
(torch 2.13.0, sizes as PyPI lists them), against 0.19 GB for the CPU wheel. A machine without an NVIDIA GPU
gets PyTorch's CPU wheels from PyTorch's own index instead. When that index cannot be
reached within a few seconds, it falls back to `default`. macOS wheels on PyPI are CPU builds with MPS.
`LABS_TORCH=cpu|cuda|default` overrides the choice; `LABS_TORCH_CPU_INDEX` names another CPU index.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 5.0
BUILDS = ("cpu", "cuda", "default")


def torch_pin(requirements: Path) -> str:
    """The torch version pinned in a requirements file (`torch==X`), e.g. '2.13.0'."""
    for line in Path(requirements).read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*torch\s*==\s*([\w.]+)\s*(#.*)?", line)
        if match:
            return match.group(1)
    raise ValueError(f"{requirements} has no 'torch==<version>' line")


def has_nvidia_gpu() -> bool:
    """True when `nvidia-smi -L` lists a GPU (the driver is installed and sees one)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and any(line.startswith("GPU ") for line in listed.stdout.splitlines())


def index_reachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, why) for a package index, asked once with a hard deadline of `timeout_s` seconds.

    The request runs in a daemon thread, so a name lookup that hangs (which socket timeouts do not cover)
    still gives up on time.
    """
    outcome: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/torch/", method="HEAD"),
                                        timeout=timeout_s):
                outcome.append((True, "reachable"))
        except urllib.error.HTTPError as exc:  # the server answered: reachable, but it has no torch page
            outcome.append((exc.code < 400, f"HTTP {exc.code}"))
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append((False, str(reason).strip() or type(exc).__name__))

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout_s)
    return outcome[0] if outcome else (False, f"no answer within {timeout_s:g} s")


def installed_fits(installed: str | None, pin: str, want: str) -> bool:
    """True when the installed torch version (e.g. '2.13.0+cpu') is the pin and of the build wanted."""
    if not installed or installed.split("+")[0] != pin:
        return False
    local = installed.partition("+")[2]
    if want == "cpu":
        return local == "cpu"
    if want == "cuda":
        return local != "cpu"
    return True


def choose(system: str, gpu: bool, pin: str, probe: Callable[[], tuple[bool, str]], installed: str | None = None,
           forced: str | None = None, cpu_index: str = CPU_INDEX) -> tuple[str, list[str], str]:
    """(build, pip arguments, why) for this machine.

    system: platform.system() ('Linux', 'Darwin', ...); gpu: an NVIDIA GPU is visible; probe: asks whether
    the CPU index answers, (reachable, why), called only when a CPU build is to be installed; installed: the
    torch version in the venv, if any; forced: LABS_TORCH.
    """
    if forced:
        if forced not in BUILDS:
            raise ValueError(f"LABS_TORCH={forced!r}: use one of {', '.join(BUILDS)}")
        want, why = forced, f"LABS_TORCH={forced}"
    elif system != "Linux":
        want, why = "default", f"{system}: PyPI's torch wheel is the right build here (CPU, with MPS on Apple silicon)"
    elif gpu:
        want, why = "cuda", "an NVIDIA GPU is visible (nvidia-smi): PyPI's CUDA build"
    else:
        want, why = "cpu", f"no NVIDIA GPU: PyTorch's CPU wheels from {cpu_index}"
    if installed_fits(installed, pin, want):
        return "keep", [], f"torch {installed} is installed already and fits ({why})"
    if want == "cpu":
        start = time.monotonic()
        reachable, reason = probe()
        if not reachable:
            return ("default", [], f"no NVIDIA GPU, but {cpu_index} cannot be reached ({reason}, "
                    f"{time.monotonic() - start:.1f} s): falling back to torch=={pin} from your default index "
                    "(on Linux x86_64 PyPI's is the CUDA build: 2.7 GB of wheels instead of 0.2 GB; set LABS_TORCH_CPU_INDEX "
                    "to a CPU index you can reach, or LABS_TORCH=default to skip this check)")
        return "cpu", [f"torch=={pin}", "--index-url", cpu_index], why
    if want == "cuda":
        return "cuda", [f"torch=={pin}"], why
    return "default", [], f"{why}: torch=={pin} as requirements.txt pins it"


def decide(requirements: Path, installed: str | None = None, env: dict | None = None) -> tuple[str, list[str], str]:
    """Look at this machine (platform, GPU, LABS_TORCH*, the CPU index when needed) and choose()."""
    import platform

    env = os.environ if env is None else env
    forced = env.get("LABS_TORCH") or None
    cpu_index = env.get("LABS_TORCH_CPU_INDEX") or CPU_INDEX
    system = platform.system()
    gpu = system == "Linux" and not forced and has_nvidia_gpu()
    return choose(system, gpu, torch_pin(requirements), lambda: index_reachable(cpu_index), installed, forced,
                  cpu_index)


def main(argv: list[str] | None = None) -> int:
    """Print `<build> [pip arguments]` on stdout and the reason on stderr; exit 2 on a bad LABS_TORCH."""
    parser = argparse.ArgumentParser(prog="torch_build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requirements", type=Path, default=Path(__file__).resolve().parents[2] / "requirements.txt")
    parser.add_argument("--installed", default="", help="the torch version installed now, if any")
    args = parser.parse_args(argv)
    try:
        build, pip_args, why = decide(args.requirements, args.installed or None)
    except (ValueError, OSError) as exc:
        print(f"setup.sh: {exc}", file=sys.stderr)
        return 2
    print(f"== torch build: {build} ({why})", file=sys.stderr)
    print(" ".join([build, *pip_args]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
