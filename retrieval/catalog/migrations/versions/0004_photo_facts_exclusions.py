"""What a photo's EXIF says, with its row; and the paths a user removed for good.

Issue 14: photo libraries are searched by when and where a photo was taken and with what,
and a removal must survive the next ``retrieve index``.

* ``images`` gains the facts read from EXIF at indexing time: ``taken_at`` (the camera's
  local date and time as ISO text, ``YYYY-MM-DDTHH:MM:SS``, which sorts as it reads and is
  compared as the camera's clock said it, like a user thinks of it), ``camera_make``,
  ``camera_model``, ``lens``, ``gps_lat``/``gps_lon`` (decimal degrees, WGS 84) and
  ``orientation``. All are nullable: rows written before this revision, and files without
  EXIF, have none. ``ix_images_taken`` serves the date filters.
* ``exclusions`` holds shell-style patterns on absolute paths (``retrieve remove``,
  ``retrieve index --exclude``) that every indexing run leaves out.

retrieve 0.1.0 would read and write rows correctly (the new columns are nullable), but a
catalog at 0003 is refused by it already (see 0003), so nothing changes for it here.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FACTS = [("taken_at", sa.String(19)), ("camera_make", sa.String), ("camera_model", sa.String), ("lens", sa.String),
          ("gps_lat", sa.Float), ("gps_lon", sa.Float), ("orientation", sa.Integer)]


def upgrade() -> None:
    for name, kind in _FACTS:  # ALTER TABLE ADD COLUMN: no copy of the table
        op.add_column("images", sa.Column(name, kind, nullable=True))
    op.create_index("ix_images_taken", "images", ["taken_at"])
    op.create_table(
        "exclusions",
        sa.Column("pattern", sa.String, primary_key=True),
        sa.Column("added_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("exclusions")
    op.drop_index("ix_images_taken", "images")
    for name, _ in reversed(_FACTS):  # ALTER TABLE DROP COLUMN (SQLite 3.35+): the partial indexes stay
        op.drop_column("images", name)
