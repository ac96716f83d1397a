"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

previous_code_compatible = False
"""Whether the code of revision ${down_revision | comma,n} may still run on this revision's schema, and this
code on what it then writes (a nullable or defaulted column, a table it never reads: True; a changed
meaning, a dropped or renamed column, a NOT NULL column without a default: False). Recorded in the
database (``migrations/env.py``), so a daemon rolled back to that code runs. Say why."""


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
