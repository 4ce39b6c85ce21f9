#!/usr/bin/env bash
# Create .venv (once) and install retrieve into it, at the exact versions of
# scripts/constraints.txt. Extras as arguments: setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
constraints=scripts/constraints.txt
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
torch_pin="$(grep -E '^torch==' "$constraints")"
vision_pin="$(grep -E '^torchvision==' "$constraints")"
if ! "$py" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '${torch_pin#torch==}')" 2>/dev/null; then
  # First and on their own: these builds are served from local disk.
  "$py" -m pip install --quiet --upgrade pip
  "$py" -m pip install --quiet "$torch_pin" "$vision_pin"
fi
# Reinstall only when the requirements, the pins or the extras changed.
stamp=".venv/.retrieve-installed"
want="$(cat pyproject.toml "$constraints" | sha256sum | cut -d' ' -f1) ${extras}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$py" -m pip install --quiet -c "$constraints" -e ".${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
