#!/usr/bin/env bash
# Install with the dev extras, lint, type-check retrieval/, and run the test suite (CPU only, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check --quiet retrieval scripts tests
.venv/bin/pyright --warnings retrieval > .venv/pyright.log || { cat .venv/pyright.log; exit 1; }
tail -n 1 .venv/pyright.log
exec .venv/bin/python -m pytest -q "$@"
