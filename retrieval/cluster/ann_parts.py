"""The ANN index at scale: a Ray job's shards fill an inverted-list index in parallel tasks.

Once a job's rows are in the catalog, the ANN index is rebuilt if it is due for it (a first
bulk load past the training threshold, a collection grown 4x beyond what it was trained on),
as saving it after local indexing would. For IVF and IVF-PQ the build trains the coarse
quantiser (and the PQ codebooks) here, on the sample the local build draws, then hands the
trained, empty index to :class:`ShardParts`: each shard's loaded rows are added to a copy of
it in a Ray task of their own (assigning every vector its cell and, in IVF-PQ, encoding it:
the part of the build that grows with the collection), and the build merges the copies
(FAISS ``merge_from``). Vectors that no loaded shard row holds (images indexed before the
job, twins that took a shard row's vector) fill one more copy here, from the catalog. Flat,
HNSW and Annoy indexes, and whitened ones, are built once in this process, as locally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..ann.faiss_index import fill_part
from .job import MAX_RETRIES, ClusterError, innermost
from .shards import shard_vectors

__all__ = ["ShardParts", "fill_from_shard"]


def fill_from_shard(trained: bytes, shard: str, rows: np.ndarray, ids: np.ndarray) -> bytes:
    """The Ray task: a copy of the trained index filled with these rows of one shard, under
    their catalog ids (run where the staging folder is visible, as the job's writers were)."""
    return fill_part(trained, ids, shard_vectors(shard, rows))


class ShardParts:
    """The :data:`~retrieval.ann.faiss_index.AddParts` of one Ray job.

    Args:
        connect: the connected ray module (called only when an inverted-list index is
            built: a flat or HNSW rebuild starts no Ray).
        sources: the shard row (file, row number) that each loaded catalog id's vector
            came from; the catalog stores that vector exactly (float32).
    """

    def __init__(self, connect: Callable[[], Any], sources: dict[int, tuple[str, int]]) -> None:
        self.connect, self.sources = connect, sources

    def __call__(self, trained: bytes, ids: np.ndarray, vectors: np.ndarray) -> list[bytes]:
        """One part a shard, filled in parallel tasks, and one for the ids no shard holds.

        Raises:
            ClusterError: a task failed (the catalog holds every row; until the next
                change rebuilds the index, the exact buffer serves the new ones).
        """
        ray = self.connect()
        by_shard: dict[str, tuple[list[int], list[int]]] = {}
        in_shards = np.zeros(len(ids), bool)
        for n, i in enumerate(ids.tolist()):
            source = self.sources.get(i)
            if source is not None:
                rows, shard_ids = by_shard.setdefault(source[0], ([], []))
                rows.append(source[1])
                shard_ids.append(i)
                in_shards[n] = True
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(fill_from_shard)
        shared = ray.put(trained)  # one copy in the object store for every task
        pending = [task.remote(shared, shard, np.array(rows, np.int64), np.array(shard_ids, np.int64))
                   for shard, (rows, shard_ids) in sorted(by_shard.items())]
        rest = [fill_part(trained, ids[~in_shards], vectors[~in_shards])] if not in_shards.all() else []
        try:
            return [*ray.get(pending), *rest]
        except ray.exceptions.RayError as e:
            raise ClusterError(f"filling the ANN index on Ray failed ({innermost(e)}); the images are "
                               "indexed, and the next change to the index rebuilds it in one process") from None
