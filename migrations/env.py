"""Alembic environment: one migration chain for SQLite and PostgreSQL.

The daemon runs it through ``AlertStore.migrate()``, which passes its open connection in
``config.attributes["connection"]``. From the command line (``alembic check``, ``alembic
revision --autogenerate``) the URL comes from ``-x url=...``, ``sqlalchemy.url`` or the
``SENTINEL_DATABASE_URL`` environment variable, in that order.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.engine import URL

from sentinel.config import DB_PASSWORD_CREDENTIAL, DB_PASSWORD_ENV, read_secret
from sentinel.store.db import normalize_url
from sentinel.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _ini_url() -> str | None:
    # With only pyproject.toml there is no alembic.ini section, and get_main_option raises.
    if not config.file_config.has_section(config.config_ini_section):
        return None
    return config.get_main_option("sqlalchemy.url")


def _url() -> URL:
    raw = (
        context.get_x_argument(as_dictionary=True).get("url")
        or _ini_url()
        or os.environ.get("SENTINEL_DATABASE_URL")
    )
    if not raw:
        raise RuntimeError(
            "no database: pass -x url=..., set sqlalchemy.url or SENTINEL_DATABASE_URL"
        )
    url = normalize_url(raw)
    password = read_secret(DB_PASSWORD_CREDENTIAL, DB_PASSWORD_ENV)
    if password and not url.password and url.get_backend_name() != "sqlite":
        url = url.set(password=password)
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
