"""item stacks: the stack (multi-page file, DICOM series, folder of numbered slices) and slice of each item, for the
`nearest-labelled` queue order (services/labelling/stack_order.py); filled when a project chooses that order

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('item_stacks',
    sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('stack', sa.String(length=64), nullable=False),
    sa.Column('slice', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id')
    )
    op.create_index('ix_item_stacks_stack', 'item_stacks', ['project_id', 'stack', 'slice'])


def downgrade() -> None:
    op.drop_index('ix_item_stacks_stack', table_name='item_stacks')
    op.drop_table('item_stacks')
