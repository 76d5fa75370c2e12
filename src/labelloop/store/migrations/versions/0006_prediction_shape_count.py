"""prediction shape count (review lists leave out predictions with no shape: they only rank items for labelling) and
the effort a reviewed prediction saved (pre-labels accepted, adjusted, rejected; shapes the person added)

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('predictions') as batch:
        batch.add_column(sa.Column('shape_count', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('effort', JSON_TYPE, nullable=True))
    length = 'jsonb_array_length' if op.get_bind().dialect.name == 'postgresql' else 'json_array_length'
    op.execute(f'UPDATE predictions SET shape_count = {length}(shapes)')


def downgrade() -> None:
    with op.batch_alter_table('predictions') as batch:
        batch.drop_column('effort')
        batch.drop_column('shape_count')
