"""latest annotations: each item's newest non-draft revision in brief (author, state, shape count) and its shapes
per class, kept in step by triggers, so project stats and the dashboard count rows instead of reading revisions

Annotation rows are only ever inserted (a deleted item cascades to these tables), so an insert trigger is all it
takes. A later migration that rebuilds `annotations` on SQLite (batch mode copies the table) drops the trigger
with the old table: create it again there (SQLITE_TRIGGERS below).

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# A non-draft revision newer than the item's current one replaces it (drafts never count; the version check keeps
# an out-of-order insert from going backwards).
SQLITE_TRIGGERS = [
    """CREATE TRIGGER latest_annotations_new_revision AFTER INSERT ON annotations
       WHEN NEW.state != 'draft'
        AND NEW.version > coalesce((SELECT version FROM latest_annotations WHERE item_id = NEW.item_id), 0)
       BEGIN
         INSERT OR REPLACE INTO latest_annotations (item_id, project_id, version, author, state, shape_count)
         SELECT NEW.item_id, project_id, NEW.version, NEW.author, NEW.state, json_array_length(NEW.shapes)
         FROM items WHERE id = NEW.item_id;
         DELETE FROM latest_annotation_labels WHERE item_id = NEW.item_id;
         INSERT INTO latest_annotation_labels (item_id, label, project_id, shapes)
         SELECT NEW.item_id, json_extract(shape.value, '$.label'),
                (SELECT project_id FROM items WHERE id = NEW.item_id), count(*)
         FROM json_each(NEW.shapes) AS shape GROUP BY 2;
       END""",
]
POSTGRES_TRIGGERS = [
    """CREATE FUNCTION latest_annotations_new_revision() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE project integer;
       BEGIN
         SELECT project_id INTO project FROM items WHERE id = NEW.item_id;
         INSERT INTO latest_annotations AS latest (item_id, project_id, version, author, state, shape_count)
         VALUES (NEW.item_id, project, NEW.version, NEW.author, NEW.state, jsonb_array_length(NEW.shapes))
         ON CONFLICT (item_id) DO UPDATE SET version = EXCLUDED.version, author = EXCLUDED.author,
                                             state = EXCLUDED.state, shape_count = EXCLUDED.shape_count
         WHERE latest.version < EXCLUDED.version;
         IF NOT FOUND THEN RETURN NULL; END IF;
         DELETE FROM latest_annotation_labels WHERE item_id = NEW.item_id;
         INSERT INTO latest_annotation_labels (item_id, label, project_id, shapes)
         SELECT NEW.item_id, shape->>'label', project, count(*)
         FROM jsonb_array_elements(NEW.shapes) AS shape GROUP BY 2;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER latest_annotations_new_revision AFTER INSERT ON annotations
       FOR EACH ROW WHEN (NEW.state <> 'draft') EXECUTE FUNCTION latest_annotations_new_revision()""",
]

# What the triggers would have written, for the revisions already there.
BACKFILL = """
INSERT INTO latest_annotations (item_id, project_id, version, author, state, shape_count)
SELECT a.item_id, i.project_id, a.version, a.author, a.state, {length}(a.shapes)
FROM annotations a JOIN items i ON i.id = a.item_id
WHERE a.version = (SELECT max(b.version) FROM annotations b WHERE b.item_id = a.item_id AND b.state <> 'draft')
"""
BACKFILL_LABELS = {
    "sqlite": """
INSERT INTO latest_annotation_labels (item_id, label, project_id, shapes)
SELECT latest.item_id, json_extract(shape.value, '$.label'), latest.project_id, count(*)
FROM latest_annotations latest
JOIN annotations a ON a.item_id = latest.item_id AND a.version = latest.version, json_each(a.shapes) AS shape
GROUP BY latest.item_id, json_extract(shape.value, '$.label'), latest.project_id
""",
    "postgresql": """
INSERT INTO latest_annotation_labels (item_id, label, project_id, shapes)
SELECT latest.item_id, shape->>'label', latest.project_id, count(*)
FROM latest_annotations latest
JOIN annotations a ON a.item_id = latest.item_id AND a.version = latest.version
CROSS JOIN LATERAL jsonb_array_elements(a.shapes) AS shape
GROUP BY latest.item_id, shape->>'label', latest.project_id
""",
}


def upgrade() -> None:
    op.create_table('latest_annotations',
    sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('author', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('shape_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id')
    )
    op.create_index('ix_latest_annotations_project', 'latest_annotations', ['project_id', 'state', 'author'])
    op.create_table('latest_annotation_labels',
    sa.Column('item_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('label', sa.String(length=200), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('shapes', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'label')
    )
    op.create_index('ix_latest_annotation_labels_project', 'latest_annotation_labels', ['project_id', 'label'])
    dialect = op.get_bind().dialect.name
    postgres = dialect == "postgresql"
    op.execute(BACKFILL.format(length='jsonb_array_length' if postgres else 'json_array_length'))
    op.execute(BACKFILL_LABELS[dialect])
    for statement in POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP TRIGGER IF EXISTS latest_annotations_new_revision" + (" ON annotations" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS latest_annotations_new_revision()")
    op.drop_index('ix_latest_annotation_labels_project', table_name='latest_annotation_labels')
    op.drop_table('latest_annotation_labels')
    op.drop_index('ix_latest_annotations_project', table_name='latest_annotations')
    op.drop_table('latest_annotations')
