"""Alembic environment: clarion runs migrations on a connection it hands over."""

from alembic import context
from sqlalchemy import text

from clarion.store.models import Base

# The PostgreSQL advisory lock that lets one migration run at a time ("clarion" in ASCII).
MIGRATION_LOCK = 0x636C6172696F6E
# How long a migration on SQLite waits for another one to finish (milliseconds).
SQLITE_MIGRATION_WAIT_MS = 15 * 60 * 1000

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `clarion migrate`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Two migrations at once on an empty database both created the same types (one failed
        # on pg_type's unique index). Held until the migration's transaction ends: the second
        # waits here, then reads the revision the first committed and has nothing to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        # The same race on SQLite ("table applications already exists"): the driver opens its
        # transaction only before a write, so the second run read an empty schema first. An
        # IMMEDIATE transaction takes the write lock now; the second waits for it. As long as
        # the other migration takes, as on PostgreSQL: the connection's usual busy timeout
        # (10 s) ran out on a slow machine, and the second run failed "database is locked".
        usual = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
        connection.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_MIGRATION_WAIT_MS}")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={int(usual or 0)}")
    # Where this run found the schema, once it may migrate it (`clarion migrate` reports it).
    context.config.attributes["found_revision"] = context.get_context().get_current_revision()
    context.run_migrations()
