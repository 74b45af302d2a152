"""Binding hardware with an installation pincode, and what may bind again: the rules of
docs/device-protocol.md, "Binding and re-binding", at the use-case level with an
explicit clock, on both engines."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from keyautomat.adapters.device_protocol import Hello, RejectReason
from keyautomat.adapters.orm_devices import device_alarms, device_links
from keyautomat.bootstrap import INSTALLATION_CODE_KEY, Container
from keyautomat.domain.devices import keyed_hash
from keyautomat.service_layer import devices
from tests.conftest import Tenant
from tests.devices import alarm_types, install


def _hello(
    container: Container,
    hw_id: str,
    now: datetime,
    *,
    code: str | None = None,
    token: str | None = None,
    product: str = "key20",
) -> devices.Welcomed:
    data = Hello.model_validate({"installationPincode": code, "product": product, "lockerCount": 4})
    policy = container.devices.bind_policy
    return container.db.transaction(
        lambda s: devices.hello(s, hw_id=hw_id, token=token, data=data, now=now, policy=policy)
    )


# The one answer to every binding that fails (docs/device-protocol.md, "Refusals").
BINDING_REFUSED = (RejectReason.WRONG_INSTALLATION_CODE, devices.INSTALLATION_REFUSED)


def _refused(
    container: Container, hw_id: str, now: datetime, **kwargs: Any
) -> tuple[RejectReason, str | None]:
    with pytest.raises(devices.DeviceRejected) as refused:
        _hello(container, hw_id, now, **kwargs)
    return refused.value.reason, refused.value.detail


def _issued_at(container: Container, automat_id: str) -> datetime:
    from keyautomat.adapters import orm

    issued: datetime | None = container.db.transaction(
        lambda s: s.scalar(
            select(orm.automats.c.installation_pincode_issued_at).where(
                orm.automats.c.id == automat_id
            )
        )
    )
    assert issued is not None
    return issued


def _link(container: Container, automat_id: str) -> Any:
    return container.db.transaction(
        lambda s: s.execute(
            select(device_links).where(device_links.c.automat_id == automat_id)
        ).one()
    )


def test_every_failure_to_bind_gets_one_answer_that_neither_confirms_a_code_nor_names_an_automat(
    acme: Tenant, container: Container
) -> None:
    key30 = install(acme, product="key30")
    other = install(acme, name="Other")
    now = _issued_at(container, key30["id"]) + timedelta(minutes=1)
    code = key30["installationPincode"]
    wrong = "000000" if code != "000000" else "111111"
    _hello(container, "HW-HOLDER", now, code=other["installationPincode"])

    answers = {
        "wrong code": _refused(container, "HW-A", now, code=wrong),
        "wrong product": _refused(container, "HW-A", now, code=code, product="key20"),
        "bound elsewhere": _refused(container, "HW-HOLDER", now, code=code, product="key30"),
        "expired": _refused(
            container, "HW-A", now + timedelta(hours=72), code=code, product="key30"
        ),
    }
    assert set(answers.values()) == {BINDING_REFUSED}, answers
    assert acme.api.get(f"/automats/{key30['id']}")["lifecycleState"] == "waitingForInstall"


def test_an_installation_pincode_expires_and_replace_issues_a_fresh_one(
    acme: Tenant, container: Container
) -> None:
    automat = install(acme)
    ttl = timedelta(hours=container.settings.installation_pincode_ttl_hours)
    assert ttl == timedelta(hours=72)
    issued = _issued_at(container, automat["id"])
    expired = issued + ttl
    _refused(container, "HW-LATE", expired, code=automat["installationPincode"])

    replaced = acme.api.post(f"/automats/{automat['id']}/replace")
    assert replaced["installationPincode"] != automat["installationPincode"]
    renewed = _issued_at(container, automat["id"])
    assert renewed > issued
    welcomed = _hello(
        container,
        "HW-LATE",
        renewed + ttl - timedelta(seconds=1),
        code=replaced["installationPincode"],
    )
    assert welcomed.automat_id == automat["id"]
    assert welcomed.token is not None


def test_the_bound_code_is_stored_as_a_keyed_hash_that_a_table_dump_cannot_invert(
    acme: Tenant, container: Container
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    _hello(container, "HW-HASH", _issued_at(container, automat["id"]), code=code)
    stored = _link(container, automat["id"]).bind_pincode_hash
    assert stored != hashlib.sha256(code.encode()).hexdigest()
    assert stored == keyed_hash(container.secrets.derive_key(INSTALLATION_CODE_KEY), code)


def test_a_device_that_lost_its_welcome_binds_again_with_the_same_code_within_the_window(
    acme: Tenant, container: Container
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    bound_at = _issued_at(container, automat["id"]) + timedelta(hours=1)
    first = _hello(container, "HW-LOST", bound_at, code=code)
    # The welcome with ``first.token`` never arrived; the device tries again.
    again = _hello(container, "HW-LOST", bound_at + timedelta(minutes=14), code=code)
    assert again.automat_id == automat["id"]
    assert again.token is not None
    assert again.token != first.token
    assert again.sync.full
    # Another piece of hardware with the same code gets nothing.
    assert _refused(container, "HW-OTHER", bound_at, code=code) == BINDING_REFUSED


def test_a_rebind_after_the_window_is_refused(acme: Tenant, container: Container) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    bound_at = _issued_at(container, automat["id"])
    _hello(container, "HW-SLOW", bound_at, code=code)
    window = timedelta(seconds=container.settings.device_rebind_window_seconds)
    late = bound_at + window + timedelta(seconds=1)
    assert _refused(container, "HW-SLOW", late, code=code) == BINDING_REFUSED


def test_a_rebind_after_the_first_authenticated_message_is_refused(
    acme: Tenant, container: Container
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    now = _issued_at(container, automat["id"])
    welcomed = _hello(container, "HW-TALKED", now, code=code)
    container.db.transaction(lambda s: devices.authenticate(s, "HW-TALKED", welcomed.token))
    assert _link(container, automat["id"]).bind_pincode_hash is None  # the code is forgotten
    assert _refused(container, "HW-TALKED", now, code=code) == BINDING_REFUSED
    # The device itself carries on with its token.
    assert _hello(container, "HW-TALKED", now, token=welcomed.token).token is None


def test_every_bind_raises_a_device_bound_alarm_that_ends_at_once(
    acme: Tenant, container: Container
) -> None:
    automat = install(acme)
    code = automat["installationPincode"]
    now = _issued_at(container, automat["id"])
    _hello(container, "HW-ALARM", now, code=code)
    _hello(container, "HW-ALARM", now + timedelta(seconds=5), code=code)  # a lost welcome
    assert alarm_types(container, automat["id"]) == [devices.BOUND_ALARM] * 2
    ended = container.db.transaction(
        lambda s: s.execute(
            select(device_alarms.c.started_at, device_alarms.c.ended_at).where(
                device_alarms.c.automat_id == automat["id"]
            )
        ).all()
    )
    assert all(row.ended_at == row.started_at for row in ended)
