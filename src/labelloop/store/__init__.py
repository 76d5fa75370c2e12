"""Persistence: SQLAlchemy tables with Alembic migrations, and a content-addressed blob store."""
