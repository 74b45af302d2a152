"""``/admin/organizationunits/{id}/strong-authentication`` (gaps.md F3)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from keyautomat.bootstrap import Container
from keyautomat.client import ApiError, Client
from keyautomat.domain.model import Role
from tests.conftest import Tenant, make_tenant
from tests.integration.test_mechanical_contracts import create, device_keys, status_of


def _admin(tenant: Tenant, http: TestClient) -> Client:
    return Client("http://testserver", tenant.account_id, tenant.private_key, http=http)


def _path(unit_id: str) -> str:
    return f"/admin/organizationunits/{unit_id}/strong-authentication"


def test_strong_authentication_is_refused_until_the_unit_enables_it(
    container: Container, acme: Tenant, http: TestClient
) -> None:
    device_keys(container, acme, "a", "b")
    admin = _admin(acme, http)
    assert admin.get(_path(acme.unit_id)) == {"enabled": False}
    with pytest.raises(ApiError) as refused:
        create(acme, keys=[{"id": "a"}], userVerification="2")
    assert refused.value.status_code == 400
    assert "userVerification" in str(refused.value)

    assert admin.call("PUT", _path(acme.unit_id), {"enabled": True}) == {"enabled": True}
    assert admin.call("PUT", _path(acme.unit_id), {"enabled": True}) == {
        "enabled": True
    }  # idempotent
    assert admin.get(_path(acme.unit_id)) == {"enabled": True}
    strong = create(acme, keys=[{"id": "a"}], userVerification="2")
    assert strong["userVerification"] == "2"

    assert admin.call("PUT", _path(acme.unit_id), {"enabled": False}) == {"enabled": False}
    assert admin.get(_path(acme.unit_id)) == {"enabled": False}
    assert status_of(lambda: create(acme, keys=[{"id": "b"}], userVerification=2)) == 400
    assert status_of(lambda: admin.call("PUT", _path(acme.unit_id), {"enabled": "yes"})) == 400
    assert status_of(lambda: admin.call("PUT", _path(acme.unit_id), {})) == 400


def test_strong_authentication_is_admin_only_and_scoped(
    container: Container, acme: Tenant, operator: Tenant, http: TestClient
) -> None:
    integration = make_tenant(
        container, http, name="Integration", parent_id=acme.unit_id, role=Role.INTEGRATION
    )
    robot = _admin(integration, http)
    assert status_of(lambda: robot.get(_path(integration.unit_id))) == 403
    assert (
        status_of(lambda: robot.call("PUT", _path(integration.unit_id), {"enabled": True})) == 403
    )

    admin = _admin(acme, http)
    # another organization's unit, and an unknown one, do not exist for this caller
    assert status_of(lambda: admin.get(_path(operator.unit_id))) == 404
    assert status_of(lambda: admin.call("PUT", _path(operator.unit_id), {"enabled": True})) == 404
    assert status_of(lambda: admin.get(_path("0" * 24))) == 404
    assert _admin(operator, http).get(_path(operator.unit_id)) == {"enabled": False}
    # a unit of the caller's subtree is in scope, and the setting is per unit
    assert admin.call("PUT", _path(integration.unit_id), {"enabled": True}) == {"enabled": True}
    assert admin.get(_path(acme.unit_id)) == {"enabled": False}
