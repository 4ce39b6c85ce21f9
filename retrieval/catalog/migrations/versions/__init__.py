"""Alembic revisions of the catalog, one file each (a package so that every installer ships them)."""
