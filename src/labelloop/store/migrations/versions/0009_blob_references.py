"""blob references: a blob may be an object registered where it lies (import --by-reference), not copied

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('blobs', sa.Column('url', sa.String(length=2048), nullable=True))


def downgrade() -> None:
    # not batch mode: rebuilding `blobs` on SQLite would trip the foreign keys that point at it (SQLite >= 3.35
    # drops a column in place, as PostgreSQL does)
    op.execute('ALTER TABLE blobs DROP COLUMN url')
