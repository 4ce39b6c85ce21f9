#!/usr/bin/env bash
# Install with the dev extras, lint, type-check retrieval/, and run the test suite (CPU only, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
# The web page's tests drive Debian's Chromium through Selenium (CI runs as root).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver) >/dev/null 2>&1 \
      || echo "could not install chromium: the browser tests will be skipped" >&2
  else
    echo "chromium and chromedriver are not installed: the browser tests will be skipped" >&2
  fi
fi
.venv/bin/ruff check --quiet retrieval scripts tests
.venv/bin/pyright --warnings retrieval > .venv/pyright.log || { cat .venv/pyright.log; exit 1; }
tail -n 1 .venv/pyright.log
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
# The runtime tests get a process of their own: with ONNX Runtime's and OpenVINO's native
# thread pools loaded beside PyTorch's, a long pytest process has died (SIGSEGV) in later
# tests that start subprocesses; neither half has, run alone. The Ray tests too: a local
# Ray cluster's processes and threads stay out of the other tests' way.
.venv/bin/python -m pytest -q --ignore=tests/runtimes --ignore=tests/cluster
.venv/bin/python -m pytest -q tests/runtimes
exec .venv/bin/python -m pytest -q tests/cluster
