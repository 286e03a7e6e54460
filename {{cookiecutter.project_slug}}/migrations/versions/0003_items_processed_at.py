"""Add items.processed_at, which the background job fills (use_worker).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:00:00

An expand step: a nullable column without a default changes only the catalogue (no
table rewrite, a brief lock), and the previous release's code, which never names the
column, runs on the schema after it (what a rollback runs).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
{%- if cookiecutter.use_kubernetes %}

# This release's code reads and writes the column: its pods wait for it.
needed_by_code = True
{%- endif %}


def upgrade() -> None:
    op.add_column("items", sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("items", "processed_at")
