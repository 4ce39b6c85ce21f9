#!/usr/bin/env bash
# Create .venv (once) and install retrieve into it. Extras as arguments: setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
if ! "$py" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
  # Pinned first and on their own: these builds are served from local disk.
  "$py" -m pip install --quiet --upgrade pip
  "$py" -m pip install --quiet torch==2.14.1 torchvision==0.29.1
fi
# Reinstall only when the project's requirements or the extras changed.
stamp=".venv/.retrieve-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${extras}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$py" -m pip install --quiet -e ".${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
