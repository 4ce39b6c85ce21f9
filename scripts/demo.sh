#!/usr/bin/env bash
# Install, index the bundled sample of 50 Caltech-101 photos, and query it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
retrieve index scripts/sample --index-dir indexes/demo
retrieve query scripts/sample/butterfly/image_0001.jpg --index-dir indexes/demo -k 5
retrieve info --index-dir indexes/demo
