"""Opening a catalog at the newest revision compares it with a constant: Alembic (a
quarter of a second to import) loads only when there is something to migrate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from retrieval.catalog import Catalog
from retrieval.catalog.migrations import HEAD, alembic_config


def test_head_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD


def test_a_current_catalog_opens_without_alembic(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.sqlite", create=True).close()  # a new catalog is migrated: Alembic runs
    probe = ("import sys; from retrieval.catalog import Catalog; "
             f"c = Catalog({str(tmp_path / 'c.sqlite')!r}); print(c.revision(), 'alembic' in sys.modules); c.close()")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (0, f"{HEAD} False\n"), run.stderr
