"""Alembic's entry point for the catalog, run by :func:`retrieval.catalog.migrations.upgrade`.

There is no alembic.ini and no engine made here: the caller passes the connection it
already holds, inside its own ``BEGIN IMMEDIATE`` transaction, as
``config.attributes["connection"]``, so every revision and the version stamp commit or
roll back together with the caller's checks, under one write lock.
"""

from alembic import context

from retrieval.catalog.models import Base

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: let autogenerate emit copy-and-move batches
)
with context.begin_transaction():
    context.run_migrations()
