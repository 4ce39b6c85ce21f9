#!/usr/bin/env bash
# Install with the dev extras, lint, and run the test suite (CPU only, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check --quiet retrieval scripts tests
exec .venv/bin/python -m pytest -q "$@"
