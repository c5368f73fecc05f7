#!/usr/bin/env bash
# Create .venv (Python 3.11), install pinned requirements and captionlab in editable mode.
# Idempotent: when requirements.txt and pyproject.toml are unchanged since the last
# successful run, it only re-checks Java and exits.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "prepare.sh: Python 3.11 not found. Install it (e.g. 'apt-get install python3.11 python3.11-venv' or pyenv) or set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

# Java runs pycocoevalcap's PTB tokenizer and METEOR. Training works without it; evaluate/score need it.
if java -version >/dev/null 2>&1; then
  echo "prepare.sh: $(java -version 2>&1 | head -n 1)"
else
  echo "prepare.sh: WARNING: Java not found. 'captionlab evaluate' and 'captionlab score' need Java 8+ for" >&2
  echo "  pycocoevalcap's PTB tokenizer and METEOR. Install it with 'apt-get install default-jre-headless'" >&2
  echo "  (Debian/Ubuntu) or 'brew install openjdk' (macOS), then make sure 'java -version' works." >&2
fi

stamp=.prepare-stamp
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && .venv/bin/python -c 'import captionlab' >/dev/null 2>&1; then
  echo "prepare.sh: .venv is up to date"
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
.venv/bin/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
# JupyterLab (requirements.txt) runs the notebooks; the venv's kernel is registered inside the venv.
.venv/bin/python -m ipykernel install --prefix "$PWD/.venv" --name captionlab --display-name "captionlab (.venv)" >/dev/null
echo "$want" > "$stamp"
echo "prepare.sh: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
