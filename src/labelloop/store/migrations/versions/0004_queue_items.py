"""queue items: the work queue's list of open items, kept in step by triggers

A later migration that rebuilds `items` or `annotations` on SQLite (batch mode copies the table) drops these
triggers with the old table: create them again there (SQLITE_TRIGGERS below).

Revision ID: 0004
Revises: 0003
"""
import json

from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# An item joins the queue when it is created and leaves it when an imported or accepted annotation settles it.
# The queue service (services/labelling/queue.py) handles leases, slots, skips and rework itself.
SQLITE_TRIGGERS = [
    """CREATE TRIGGER queue_items_new_item AFTER INSERT ON items
       BEGIN INSERT INTO queue_items (item_id, project_id, position) VALUES (NEW.id, NEW.project_id, NEW.position); END""",
    """CREATE TRIGGER queue_items_settled AFTER INSERT ON annotations
       WHEN NEW.state = 'accepted' OR NEW.source = 'import'
       BEGIN DELETE FROM queue_items WHERE item_id = NEW.item_id; END""",
]
POSTGRES_TRIGGERS = [
    """CREATE FUNCTION queue_items_new_item() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO queue_items (item_id, project_id, position) VALUES (NEW.id, NEW.project_id, NEW.position);
       RETURN NULL; END $$""",
    """CREATE TRIGGER queue_items_new_item AFTER INSERT ON items
       FOR EACH ROW EXECUTE FUNCTION queue_items_new_item()""",
    """CREATE FUNCTION queue_items_settled() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN DELETE FROM queue_items WHERE item_id = NEW.item_id; RETURN NULL; END $$""",
    """CREATE TRIGGER queue_items_settled AFTER INSERT ON annotations
       FOR EACH ROW WHEN (NEW.state = 'accepted' OR NEW.source = 'import') EXECUTE FUNCTION queue_items_settled()""",
]

# Open items of one project: not settled, fewer active assignments than the project's overlap.
BACKFILL = """
INSERT INTO queue_items (item_id, project_id, position)
SELECT i.id, i.project_id, i.position FROM items i
WHERE i.project_id = :project_id
  AND (SELECT count(*) FROM assignments a WHERE a.item_id = i.id AND a.state IN ('leased', 'done')) < :overlap
  AND NOT EXISTS (SELECT 1 FROM annotations n WHERE n.item_id = i.id AND (n.state = 'accepted' OR n.source = 'import'))
"""


def upgrade() -> None:
    op.create_table('queue_items',
    sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id')
    )
    with op.batch_alter_table('queue_items', schema=None) as batch_op:
        batch_op.create_index('ix_queue_items_sequential', ['project_id', 'item_id'], unique=False)
        batch_op.create_index('ix_queue_items_shuffled', ['project_id', 'position', 'item_id'], unique=False)
    bind = op.get_bind()
    for statement in POSTGRES_TRIGGERS if bind.dialect.name == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)
    for project_id, settings in bind.execute(sa.text("SELECT id, settings FROM projects")).all():
        if isinstance(settings, str):  # SQLite hands JSON back as text here
            settings = json.loads(settings)
        overlap = int((settings or {}).get("overlap", 1))
        bind.execute(sa.text(BACKFILL), {"project_id": project_id, "overlap": overlap})


def downgrade() -> None:
    bind = op.get_bind()
    op.execute("DROP TRIGGER IF EXISTS queue_items_settled" + (" ON annotations" if bind.dialect.name == "postgresql" else ""))
    op.execute("DROP TRIGGER IF EXISTS queue_items_new_item" + (" ON items" if bind.dialect.name == "postgresql" else ""))
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS queue_items_settled()")
        op.execute("DROP FUNCTION IF EXISTS queue_items_new_item()")
    with op.batch_alter_table('queue_items', schema=None) as batch_op:
        batch_op.drop_index('ix_queue_items_shuffled')
        batch_op.drop_index('ix_queue_items_sequential')
    op.drop_table('queue_items')
