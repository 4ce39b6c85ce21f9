"""Partial indexes on status, in place of one index that misled SQLite's planner.

0.1.0 indexed ``status`` on its own. Nearly every row is "ok", so that index selects
almost everything, yet with no statistics SQLite's planner prefers it to the
``content_hash`` index. :meth:`Catalog.ok_ids_with_hash` (``content_hash IN (500 hashes)
AND status = 'ok'``, run by every indexing pass to reuse the vectors of known content)
therefore walked every ok row: about 95 ms per 500 hashes at 300,000 images, some 20 s of
planning for 100,000 new files. Measured on that catalog (2-core machine):

==========================  ========  =======
query                       0001      0002
==========================  ========  =======
ok_ids_with_hash(500)       95 ms     1.2 ms
hash_groups (dupes --exact) 350 ms    145 ms
failed(20) (info)           8 ms      0.05 ms
counts, ids_matching        same      same
==========================  ========  =======

* ``ix_images_ok_hash (content_hash, id) WHERE status = 'ok'`` answers the hash lookup from
  the index alone, walks duplicate groups in order without a temporary sort, and covers
  counting and listing ok images;
* ``ix_images_failed (path) WHERE status = 'failed'`` lists and counts failed files, which
  are few, in path order;
* ``ix_images_status`` and ``ix_images_content_hash`` go: the two above serve every query
  that used them, and writes stop updating them.

Queries must spell the status as a literal (:func:`retrieval.catalog.models.has_status`),
or SQLite cannot use a partial index. retrieve 0.1.0 still reads and writes a catalog at
this revision correctly (indexes only change query plans), so the settings
"schema_version" stays 1.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_images_ok_hash", "images", ["content_hash", "id"], sqlite_where=sa.text("status = 'ok'"))
    op.create_index("ix_images_failed", "images", ["path"], sqlite_where=sa.text("status = 'failed'"))
    op.drop_index("ix_images_status", "images")
    op.drop_index("ix_images_content_hash", "images")


def downgrade() -> None:
    op.create_index("ix_images_content_hash", "images", ["content_hash"])
    op.create_index("ix_images_status", "images", ["status"])
    op.drop_index("ix_images_failed", "images")
    op.drop_index("ix_images_ok_hash", "images")
