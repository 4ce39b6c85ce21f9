"""The catalog as retrieve 0.1.0 made it (settings "schema_version" 1), column for column.

Catalogs written by 0.1.0 have no ``alembic_version`` table; they are stamped with this
revision when first opened, so this revision must never change.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.String, nullable=False),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("mtime_ns", sa.Integer, nullable=False),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("format", sa.String(16)),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("gen", sa.Integer, nullable=False),
        sa.Column("added_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_images_path", "images", ["path"], unique=True)
    op.create_index("ix_images_gen", "images", ["gen"])
    op.create_index("ix_images_content_hash", "images", ["content_hash"])
    op.create_index("ix_images_status", "images", ["status"])
    op.create_table(
        "tombstones",
        sa.Column("image_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("gen", sa.Integer, nullable=False),
    )
    op.create_index("ix_tombstones_gen", "tombstones", ["gen"])
    settings = op.create_table(
        "settings",
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "vectors",
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True,
                  autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.bulk_insert(settings, [{"key": "schema_version", "value": "1"}, {"key": "generation", "value": "0"}])
