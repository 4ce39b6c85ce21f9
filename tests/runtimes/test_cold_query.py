"""A cold `retrieve query` run by a cached graph never loads PyTorch (most of a cold
query's time: ~1.5 s of import and ~0.8 s of teardown here), and answers as PyTorch does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval import Engine
from retrieval.options import EngineOptions, no_cuda_possible

from ..conftest import SAMPLE
from .conftest import RUNTIME_NAMES

CODE = """
import sys
from retrieval.cli.app import main
sys.argv = ["retrieve", "query", sys.argv[1], "--index-dir", sys.argv[2], "-k", "5", "--runtime", sys.argv[3], "--json"]
try:
    main()
finally:
    print("TORCH", "torch" in sys.modules)
"""


@pytest.mark.skipif(not no_cuda_possible(), reason="a machine with an NVIDIA driver asks PyTorch whether it has a GPU")
@pytest.mark.parametrize("runtime", [*RUNTIME_NAMES, "auto"])
def test_a_cold_query_by_a_cached_graph_never_imports_pytorch(tmp_path: Path, runtime: str) -> None:
    photos = sorted(p for d in ("butterfly", "grand_piano", "airplanes") for p in (SAMPLE / d).glob("*.jpg"))
    query, indexed = photos[0], photos[1:]
    # No decode worker processes: forking beside ONNX Runtime's and OpenVINO's thread pools has
    # crashed a long pytest process (see scripts/test.sh).
    with Engine.create(tmp_path / "index", options=EngineOptions(runtime=runtime, workers=0)) as engine:
        engine.add(indexed)  # exports the graph into the cache (and, for auto, measures the choice)
        expected = [h.id for h in engine.search(str(query), k=5)]
    env = {**os.environ, "RETRIEVE_RUNTIME": runtime}
    out = subprocess.run([sys.executable, "-c", CODE, str(query), str(tmp_path / "index"), runtime],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "TORCH False", "PyTorch was imported by a query that a cached graph answers"
    hits = json.loads("\n".join(lines[:-1]))
    assert [h["id"] for h in hits["results"]] == expected
