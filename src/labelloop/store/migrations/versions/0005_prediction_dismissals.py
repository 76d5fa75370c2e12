"""prediction dismissals: pre-label shapes a user rejected while labelling, so they stay gone after a reload

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('prediction_dismissals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prediction_id', sa.Integer(), nullable=False),
    sa.Column('shape_index', sa.Integer(), nullable=False),
    sa.Column('user_name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['prediction_id'], ['predictions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('prediction_id', 'shape_index', 'user_name', name='uq_prediction_dismissals')
    )
    op.create_index(op.f('ix_prediction_dismissals_prediction_id'), 'prediction_dismissals', ['prediction_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_prediction_dismissals_prediction_id'), table_name='prediction_dismissals')
    op.drop_table('prediction_dismissals')
