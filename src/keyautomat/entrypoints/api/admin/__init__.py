"""The admin API outside ``/v2`` (gaps.md B8): what the vendor's web UI does. Signed like V2.

Every route under ``/admin`` is for ``admin`` service accounts only, and this is
the one place that says so: :func:`build_router` puts the role check on the
router that holds them all, so a route added to any of them is covered without
remembering anything. ``docs/api.md`` lists each route with its role, and a test
holds the table and the application to each other.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from keyautomat.contracts.iloq import routes as iloq_contracts
from keyautomat.contracts.mechanical import routes as mechanical_contracts
from keyautomat.entrypoints.api import admin_webhooks
from keyautomat.entrypoints.api.admin import devices, notifications, strong_authentication
from keyautomat.entrypoints.api.auth import Caller

PREFIX = "/admin"


async def _admin_role(caller: Caller) -> None:
    # async: a plain def dependency would cost a worker-thread round trip per request
    caller.require_admin()


def build_router() -> APIRouter:
    """Every admin route, behind the admin-role check; it runs before the body is validated."""
    router = APIRouter(prefix=PREFIX, dependencies=[Depends(_admin_role)])
    router.include_router(notifications.router)
    router.include_router(strong_authentication.router)
    router.include_router(admin_webhooks.router)
    router.include_router(devices.router, include_in_schema=False)
    router.include_router(mechanical_contracts.admin_router)
    router.include_router(mechanical_contracts.keys_admin_router)
    router.include_router(iloq_contracts.admin_router)
    return router
