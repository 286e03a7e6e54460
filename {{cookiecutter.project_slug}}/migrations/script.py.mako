"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
{%- if cookiecutter.use_kubernetes %}

# Whether this release's code needs this revision: its pods wait for it before they start
# (the schema gate). False when the code also runs without it, e.g. a step that removes
# what no running code uses any more: pods then start while it is being applied. Either
# way the previous release's code must still run on the schema after it (the README's
# "Schema changes and rollbacks"): it is what a rollback runs.
needed_by_code = True
{%- endif %}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
