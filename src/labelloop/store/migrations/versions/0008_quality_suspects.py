"""quality: suspects (label errors, duplicates, outliers, spot-checks) with people's decisions, image checks per
item (pHash, blur, exposure) computed once, and the fingerprint of each check's last run

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('suspects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('check', sa.String(length=64), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('details', JSON_TYPE, nullable=False),
    sa.Column('group_key', sa.String(length=64), nullable=True),
    sa.Column('basis', sa.String(length=64), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'kind', 'item_id', 'check', name='uq_suspects_item_check')
    )
    op.create_index('ix_suspects_list', 'suspects', ['project_id', 'kind', 'score'], unique=False)
    op.create_index(op.f('ix_suspects_item_id'), 'suspects', ['item_id'], unique=False)
    op.create_table('item_checks',
    sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('phash', sa.BigInteger(), nullable=False),
    sa.Column('measures', JSON_TYPE, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id')
    )
    op.create_table('quality_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('summary', JSON_TYPE, nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'kind', name='uq_quality_runs')
    )


def downgrade() -> None:
    op.drop_table('quality_runs')
    op.drop_table('item_checks')
    op.drop_index(op.f('ix_suspects_item_id'), table_name='suspects')
    op.drop_index('ix_suspects_list', table_name='suspects')
    op.drop_table('suspects')
