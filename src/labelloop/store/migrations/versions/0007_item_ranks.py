"""item ranks: sampling strategies' orders cached per model version, and the rank the work queue orders by

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('item_ranks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.String(length=200), nullable=False),
    sa.Column('strategy', sa.String(length=64), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('item_id', 'model_version', 'strategy', name='uq_item_ranks')
    )
    with op.batch_alter_table('item_ranks', schema=None) as batch_op:
        batch_op.create_index('ix_item_ranks_project', ['project_id', 'strategy', 'model_version'], unique=False)
    # Adding a nullable column needs no table rebuild on SQLite, so the triggers of 0004 stay in place.
    op.add_column('queue_items', sa.Column('rank', sa.Integer(), nullable=True))
    op.create_index('ix_queue_items_ranked', 'queue_items', ['project_id', 'rank', 'position', 'item_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_queue_items_ranked', table_name='queue_items')
    # Not batch mode: rebuilding queue_items on SQLite trips 0004's triggers; SQLite >= 3.35 drops a column itself.
    op.execute('ALTER TABLE queue_items DROP COLUMN rank')
    with op.batch_alter_table('item_ranks', schema=None) as batch_op:
        batch_op.drop_index('ix_item_ranks_project')
    op.drop_table('item_ranks')
