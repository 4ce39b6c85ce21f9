"""A table for the local features of images in indexes that keep them (issue 17).

``local_features`` holds one row per ok image of an index created with local features
(``retrieve index --local sift``): its keypoints and descriptors as bytes, written in the
transaction that writes the image's vector and deleted with its row. Indexes without local
features leave it empty. An older release never reads this table, but it would not keep
it in step with removals either, so it refuses a catalog at this revision as newer (the
Alembic revision, not "schema_version", tells it so).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "local_features",
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True,
                  autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("local_features")
