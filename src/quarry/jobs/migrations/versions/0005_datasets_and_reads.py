"""Datasets (a named store with an owner and a visibility), the audit log of their reads, and
tokens that belong to one job (what its attempts read data with).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("project", sa.String(100), nullable=False),
        sa.Column("visibility", sa.String(20), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "data_reads",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("user", sa.String(100), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("dataset", sa.String(100), nullable=False),
        sa.Column("route", sa.String(40), nullable=False),
        sa.Column("commit", sa.Text(), nullable=False),
        sa.Column("as_of", sa.String(40), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
    )
    op.create_index("ix_data_reads_dataset_at", "data_reads", ["dataset", "at"])
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("job_id", sa.BigInteger(), nullable=True))
        batch.create_index("ix_tokens_job_id", ["job_id"])


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_index("ix_tokens_job_id")
        batch.drop_column("job_id")
    op.drop_index("ix_data_reads_dataset_at", "data_reads")
    op.drop_table("data_reads")
    op.drop_table("datasets")
