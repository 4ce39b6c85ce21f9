"""How the embed actors are sized from the cluster's resources (no Ray needed)."""

from __future__ import annotations

import pytest

from retrieval.cluster.pipeline import embed_resources


@pytest.mark.parametrize(("cluster", "device", "actors", "expected"), [
    ({"CPU": 64, "GPU": 4}, "auto", None, {"device": "cuda", "num_gpus": 1, "actors": 4}),
    ({"CPU": 64, "GPU": 4}, "auto", 2, {"device": "cuda", "num_gpus": 1, "actors": 2}),
    ({"CPU": 64, "GPU": 4}, "cpu", None, {"device": "cpu", "num_cpus": 4, "actors": 8}),
    ({"CPU": 2}, "auto", None, {"device": "cpu", "num_cpus": 1, "actors": 1}),
    ({"CPU": 1}, "auto", None, {"device": "cpu", "num_cpus": 1, "actors": 1}),
])
def test_embed_actors(cluster: dict[str, float], device: str, actors: int | None, expected: dict[str, object]) -> None:
    """A GPU per actor where there are GPUs (unless --device cpu); else at most 4 CPUs each
    from half the CPUs, the other half left to decoding."""
    assert embed_resources(cluster, device, actors) == expected
