"""Schema migrations of the catalog (Alembic), run when a newer release opens a bundle.

A catalog records its revision in ``alembic_version``; one written by retrieve 0.1.0 has
no such table but says ``schema_version`` 1 in its settings, and is stamped "0001" (that
schema exactly) before upgrading. Everything runs programmatically from this package:
no ``alembic.ini`` and no template are needed at run time, only these ``.py`` files.

To add a revision, copy the newest file in ``versions/``, give it the next number as
``revision`` and the previous one as ``down_revision``, set :data:`HEAD` to it, and change
``models.py`` to match (tests check that HEAD is Alembic's head and that the models equal
it). Alembic itself (a quarter of a second to import) loads only when a catalog is not
at HEAD: opening an up-to-date bundle compares one string.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text

from ...errors import IndexTooNewError, RetrievalError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = ["HEAD", "LEGACY_REVISION", "alembic_config", "head", "current", "check_known", "upgrade"]

log = logging.getLogger(__name__)

HEAD = "0004"  # the newest revision in versions/ (a test checks it is Alembic's head)
LEGACY_REVISION = "0001"  # what a catalog without alembic_version (retrieve 0.1.0) is
_LEGACY_SCHEMA_VERSION = "1"
_VERSION_TABLE = "alembic_version"  # Alembic's default, where it keeps the revision


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for these migrations, running on `connection` (see env.py).

    Also for running Alembic commands by hand, e.g. a downgrade:
    ``command.downgrade(alembic_config(conn), "0001")`` inside ``with engine.begin() as conn``.
    """
    from alembic.config import Config

    config = Config()
    # The option goes through ConfigParser interpolation, where "%" is special.
    config.set_main_option("script_location", str(Path(__file__).parent).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this release knows: :data:`HEAD`."""
    return HEAD


def current(conn: Connection, path: Path) -> str | None:
    """The revision of the catalog on `conn`; None for an empty database (a new catalog).

    Raises:
        RetrievalError: the file holds tables but is no retrieve catalog.
    """
    tables = _tables(conn)
    if _VERSION_TABLE in tables:
        return conn.scalar(text(f"SELECT version_num FROM {_VERSION_TABLE}"))
    if not tables:
        return None
    version = None
    if "settings" in tables:
        version = conn.scalar(text("SELECT value FROM settings WHERE key = 'schema_version'"))
    if version == _LEGACY_SCHEMA_VERSION:
        return LEGACY_REVISION
    raise RetrievalError(f"{path} is not a retrieve catalog (no schema version in it); "
                         "point --index-dir at a folder made by `retrieve index`")


def _tables(conn: Connection) -> set[str]:
    return set(conn.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table'")))


def check_known(revision: str | None, bundle: Path) -> None:
    """Refuse a catalog that a newer release has migrated past what this one knows.

    Raises:
        IndexTooNewError: `revision` is not one of this release's revisions.
    """
    if revision in (None, HEAD):
        return
    if revision not in {s.revision for s in _scripts().walk_revisions()}:
        raise IndexTooNewError(f"index at {bundle} was written by a newer retrieve (schema {revision}); "
                               "upgrade retrieve")


def upgrade(writer: Engine, path: Path, bundle: Path) -> None:
    """Bring the catalog to :func:`head` in one exclusive transaction.

    `writer` begins its transactions IMMEDIATE, so of several processes opening the same
    old (or new, empty) catalog at once, one migrates while the others wait for the
    write lock; they then read the new revision and have nothing left to do. A failure
    rolls the whole upgrade back, stamp included.
    """
    with writer.begin() as conn:
        revision = current(conn, path)
        check_known(revision, bundle)
        target = head()
        if revision == target:
            return
        from alembic import command

        config = alembic_config(conn)
        if revision == LEGACY_REVISION and _VERSION_TABLE not in _tables(conn):  # made by retrieve 0.1.0
            command.stamp(config, LEGACY_REVISION)
        log.info("upgrading catalog %s from schema %s to %s", path, revision or "(new)", target)
        command.upgrade(config, target)
