"""a counter of changes to service accounts, kept by triggers, for the API's account cache

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-10 09:00:00.000000

The API keeps the service accounts it verifies requests for in process memory and
trusts them only while this counter (the ``service_accounts`` row of
``id_counters``) has not moved (docs/security.md, "Service accounts are cached").
Triggers bump it in the same transaction as any change that could alter how a
request is verified: a service account inserted, updated (re-keyed, its role or
unit changed) or deleted, and an organization unit's path or type changed or the
unit deleted. Triggers rather than the service layer: a change made by any
process, the CLI or plain SQL is seen too.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BUMP = "UPDATE id_counters SET value = value + 1 WHERE name = 'service_accounts';"
# (trigger name, event, table); SQLite wants one trigger per event.
_SQLITE = (
    ("service_accounts_version_insert", "INSERT", "service_accounts"),
    ("service_accounts_version_update", "UPDATE", "service_accounts"),
    ("service_accounts_version_delete", "DELETE", "service_accounts"),
    ("organization_units_version_update", "UPDATE OF path, type", "organization_units"),
    ("organization_units_version_delete", "DELETE", "organization_units"),
)


def upgrade() -> None:
    op.execute("INSERT INTO id_counters (name, value) VALUES ('service_accounts', 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION service_accounts_version() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN {_BUMP} RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER service_accounts_version AFTER INSERT OR UPDATE OR DELETE "
            "ON service_accounts FOR EACH STATEMENT EXECUTE FUNCTION service_accounts_version()"
        )
        op.execute(
            "CREATE TRIGGER organization_units_version AFTER UPDATE OF path, type OR DELETE "
            "ON organization_units FOR EACH STATEMENT EXECUTE FUNCTION service_accounts_version()"
        )
        return
    for name, event, table in _SQLITE:
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN {_BUMP} END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER organization_units_version ON organization_units")
        op.execute("DROP TRIGGER service_accounts_version ON service_accounts")
        op.execute("DROP FUNCTION service_accounts_version()")
    else:
        for name, _, _ in _SQLITE:
            op.execute(f"DROP TRIGGER {name}")
    op.execute("DELETE FROM id_counters WHERE name = 'service_accounts'")
