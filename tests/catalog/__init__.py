"""Tests of the catalog: schema migrations, metadata rules, how the SQLite file is opened."""
