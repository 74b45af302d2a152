"""Alembic environment: the URL comes from the caller's config or from KEYAUTOMAT settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from keyautomat.adapters.db import make_engine
from keyautomat.adapters.orm import load_all_tables
from keyautomat.config import load_settings

config = context.config
metadata = load_all_tables()


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or load_settings().database_url
    engine = make_engine(url, pool_size=1)
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
