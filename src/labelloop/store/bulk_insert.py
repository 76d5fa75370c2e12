"""Many rows in one go inside the caller's transaction: COPY on PostgreSQL, batched INSERTs elsewhere.

An import of 100,000 files spent most of its commit in psycopg splitting SQLAlchemy's multi-row INSERT statements
(each over psycopg's 4 kB statement cache, so parsed again per batch of 500 rows); COPY sends the rows as data.
Rows are dicts keyed by column name (not attribute name), like a Core insert's parameters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Table, insert, text
from sqlalchemy.orm import Session

BATCH = 500


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], *, ids: bool = False) -> list[int]:
    """Insert `rows` (each with the same keys) into `table`; with ids=True return their new `id`s in row order."""
    if not rows:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return _copy(connection, table, rows, ids)
    new_ids: list[int] = []
    for start in range(0, len(rows), BATCH):
        chunk = list(rows[start : start + BATCH])
        if ids:
            new_ids.extend(session.scalars(insert(table).returning(table.c.id, sort_by_parameter_order=True), chunk))
        else:
            session.execute(insert(table), chunk)
    return new_ids


def _copy(connection, table: Table, rows: Sequence[dict[str, Any]], ids: bool) -> list[int]:
    given = list(rows[0])
    # COPY applies server defaults only: columns the rows leave out take their Python-side defaults here.
    defaults = {c.name: c.default.arg(None) if c.default.is_callable else c.default.arg
                for c in table.columns if c.name not in given and c.default is not None}
    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
    new_ids: list[int] = []
    if ids:
        sequence = connection.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}).scalar()
        new_ids = list(connection.execute(text("SELECT nextval(:s) FROM generate_series(1, :n)"),
                                          {"s": sequence, "n": len(rows)}).scalars())
    names = ", ".join(f'"{c}"' for c in [*(["id"] if ids else []), *given, *defaults])
    fixed = list(defaults.values())
    cursor = connection.connection.dbapi_connection.cursor()
    with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        for n, row in enumerate(rows):
            values = [json.dumps(row[c]) if c in json_columns and row[c] is not None else row[c] for c in given]
            copy.write_row([new_ids[n], *values, *fixed] if ids else [*values, *fixed])
    return new_ids
