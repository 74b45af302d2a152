"""Apply Alembic migrations from code (``keyautomat migrate`` and ``serve`` start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from keyautomat.adapters.db import make_engine

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the database at ``url`` to ``revision``; safe to call on every start."""
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()
