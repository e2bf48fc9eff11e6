"""Alembic's environment for the job service: the connection comes from the caller
(``quarry.jobs._store.migrate``), never from a config file."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
