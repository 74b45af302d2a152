"""webhook health: counters and disabling of subscriptions, attempt-log retention, admin notices

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02 09:00:00.000000

* ``webhook_subscriptions`` gains its health (docs/webhooks.md, "Health"):
  delivery counters, the last success and failure, the start of the current
  failing streak, and when it was disabled. Counters start at zero for
  subscriptions that existed before: they count from this upgrade on.
* ``webhook_attempts.attempted_at`` is indexed, so the worker's retention
  pruning finds the oldest entries without scanning the log.
* ``notification_settings.admin_email``: where notices to a unit's admins go.
* ``notifications.contract_id`` becomes nullable: a notice to the unit's
  admins is about no contract.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import keyautomat.adapters.orm

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str) -> sa.Column:
    return sa.Column(name, keyautomat.adapters.orm.UtcDateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("delivered_count", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("failed_count", sa.BigInteger(), nullable=False, server_default="0")
        )
        for name in ("last_success_at", "last_failure_at", "failing_since", "disabled_at"):
            batch_op.add_column(_time(name))
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_attempts_attempted_at", ["attempted_at"], unique=False)
    with op.batch_alter_table("notification_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admin_email", sa.Text(), nullable=True))
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("contract_id", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE contract_id IS NULL")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.alter_column("contract_id", existing_type=sa.Text(), nullable=False)
    with op.batch_alter_table("notification_settings", schema=None) as batch_op:
        batch_op.drop_column("admin_email")
    with op.batch_alter_table("webhook_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_attempts_attempted_at")
    with op.batch_alter_table("webhook_subscriptions", schema=None) as batch_op:
        for name in (
            "disabled_at",
            "failing_since",
            "last_failure_at",
            "last_success_at",
            "failed_count",
            "delivered_count",
        ):
            batch_op.drop_column(name)
