"""Backend parameters: declared once, validated before anything is built or saved.

Each bad value here used to reach FAISS or Annoy: M=0 aborted the process on the first
insert, M=-1 asked for 24 GB, pq_m=7 broke every search once IVF-PQ trained, and
n_trees=0 found nothing, silently.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from retrieval import ann
from retrieval.ann import BACKENDS, check_settings, create_index
from retrieval.errors import RetrievalError, UnknownNameError

ROOT = Path(__file__).resolve().parents[2]
DIM = 32

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("hnsw", {"M": "abc"}, "parameter M='abc': expected an integer from 2 to 256"),
    ("hnsw", {"M": 0}, "parameter M=0: expected an integer from 2 to 256"),
    ("hnsw", {"M": -1}, "parameter M=-1: expected an integer from 2 to 256"),
    ("hnsw", {"M": 257}, "parameter M=257: expected an integer from 2 to 256"),
    ("hnsw", {"ef_search": 0}, "parameter ef_search=0: expected an integer from 1 to 65536"),
    ("hnsw", {"ef_construction": 2.5}, "parameter ef_construction=2.5: expected an integer"),
    ("annoy", {"n_trees": 0}, "parameter n_trees=0: expected an integer from 1 to 4096"),
    ("annoy", {"search_k": -1}, "parameter search_k=-1: expected an integer from 1 to"),
    ("ivf", {"nlist": 0}, "parameter nlist=0: expected an integer from 1 to 65536"),
    ("ivf", {"nprobe": -3}, "parameter nprobe=-3: expected an integer from 1 to 65536"),
    ("ivf", {"train_min": 0}, "parameter train_min=0: expected an integer of at least 1"),
    ("ivfpq", {"pq_m": 0}, "parameter pq_m=0: expected an integer of at least 1"),
    ("ivfpq", {"pq_m": 7}, "ivfpq parameter pq_m=7 must divide the dimension 32: choose 1, 2, 4, 8, 16, 32"),
    ("ivf", {"pq_m": 4}, "ANN index 'ivf' has no parameter 'pq_m'; its parameters: nlist, nprobe, train_min"),
    ("hnsw", {"nlist": 12}, "ANN index 'hnsw' has no parameter 'nlist'; its parameters: M, ef_construction, ef_search"),
    ("flat", {"M": 16}, "ANN index 'flat' has no parameter 'M'; its parameters: none"),
    ("auto", {"M": 16}, "the auto index takes no parameters"),
    ("lsh", {}, "unknown ANN index 'lsh'; choose flat, ivf, ivfpq, hnsw, annoy, auto"),
]


@pytest.mark.parametrize("name,params,message", BAD, ids=[f"{n}-{p}" for n, p, _ in BAD])
def test_a_bad_setting_is_one_clear_error(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(RetrievalError) as caught:
        check_settings(name, params, DIM)
    assert message in str(caught.value)
    if name != "auto":  # building the index directly is refused the same way
        with pytest.raises(RetrievalError, match="must divide|expected|no parameter|unknown"):
            create_index(name, DIM, **params)


def test_an_unknown_backend_is_an_unknown_name() -> None:
    with pytest.raises(UnknownNameError):
        check_settings("lsh", {})
    assert [*BACKENDS] == ["flat", "ivf", "ivfpq", "hnsw", "annoy"] and ann.AUTO not in BACKENDS


def test_settings_are_typed_completed_and_compare_equal_however_spelled() -> None:
    """Command-line text becomes numbers, every default is filled in, and checks that
    need the dimension use the real one (pq_m=5 divides 1,280, not the 64 once used)."""
    assert check_settings("hnsw", {"M": "12"}) == {"M": 12, "ef_construction": 80, "ef_search": 256}
    assert check_settings("hnsw", {}) == check_settings("hnsw", {"M": 32, "ef_search": "256"})
    assert check_settings("annoy", {"search_k": None}) == {"n_trees": 64}
    assert check_settings("auto", {}) == {}
    assert check_settings("ivfpq", {"pq_m": 5}, 1280)["pq_m"] == 5
    with pytest.raises(RetrievalError, match="must divide the dimension 64"):
        check_settings("ivfpq", {"pq_m": 5}, 64)
    assert check_settings("ivfpq", {"pq_m": 5}) == {"pq_m": 5, "train_min": 10_000}, "no dimension, no such check"


@pytest.mark.parametrize("name", list(BACKENDS))
def test_declared_parameters_are_the_constructor_s_with_its_defaults(name: str) -> None:
    """The registry's defaults come from the constructor, and a fresh index reports them."""
    entry = BACKENDS.entry(name)
    signature = inspect.signature(entry.factory).parameters
    assert set(entry.params) == set(signature) - {"dim", "index"}
    fresh = create_index(name, DIM).params()
    for key, param in entry.params.items():
        assert param.default == signature[key].default
        if param.default is not None:
            assert fresh[key] == param.default, key


# Through the Engine, in a child process: if a bad value ever reached FAISS again, the
# abort (M=0) or the allocation (M=-1, capped here) must fail this test, not kill pytest.
CHILD = """
    import json, resource
    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
    from pathlib import Path
    import numpy as np
    from retrieval import RetrievalError
    from tests.annhelpers import clustered, synthetic_bundle
    s = synthetic_bundle(Path(sys.argv[1]), clustered(300, 32, 4, seed=1), "hnsw", {"M": 8})
    file, before = s.engine.path / "ann.index", (s.engine.path / "ann.index").read_bytes()
    settings = s.engine.catalog.get_setting("index")
    out = []
    for name, params in json.loads(sys.argv[2]):
        try:
            s.engine.reindex(name, **params)
            error = None
        except RetrievalError as e:
            error = str(e)
        hits = [h.id for h in s.engine.search(s.vectors[5], k=3)]
        out.append({"error": error, "settings_kept": s.engine.catalog.get_setting("index") == settings,
                    "file_kept": file.read_bytes() == before, "hits": hits})
    print(json.dumps(out))
"""


def test_engine_reindex_refuses_bad_parameters_before_saving_anything(tmp_path: Path) -> None:
    cases = [(n, p) for n, p, _ in BAD if n not in ("auto", "lsh")]
    prelude = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
    run = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(CHILD), str(tmp_path / "b"),
                          json.dumps(cases)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout.splitlines()[-1])
    assert len(results) == len(cases)
    for (name, params), got in zip(cases, results):
        assert got["error"], f"{name} {params} was accepted"
        assert got["settings_kept"] and got["file_kept"], (name, params)
        assert got["hits"][0] == 5, "the bundle still searches as before"
