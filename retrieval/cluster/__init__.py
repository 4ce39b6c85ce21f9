"""Indexing as a Ray job: the embed phase of :meth:`Engine.index` on a Ray cluster.

The catalog stays the truth and the ANN index its cache: the plan is made here exactly as
for local indexing (unchanged files skipped by stat and hash, vanished ones removed), and
only the plan's new contents go to the cluster. There a Ray Data pipeline reads, decodes
and preprocesses them in CPU tasks, embeds them in an actor pool (one GPU per actor where
the cluster has GPUs) and writes Parquet shards into a staging folder inside the bundle
(:mod:`.shards`); then this process alone loads the shards into the catalog, in batches,
the ANN index catching up after each, as it does locally.

A job killed at any point resumes: the shards it completed are still in the staging folder,
and the next run embeds only what they do not cover (:mod:`.phase`). Needs the ``ray``
extra (``pip install 'retrieve[ray]'``); importing this package imports neither Ray nor
torch (the CLI names :data:`LOCAL` at startup): the phase is in :mod:`.phase`.
"""

from .job import LOCAL, ClusterError, RayJob

__all__ = ["LOCAL", "ClusterError", "RayJob"]
