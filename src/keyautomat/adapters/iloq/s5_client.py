"""The iLOQ port over the iLOQ S5 public API (REST/JSON under ``/api/v2``).

Configured per organization unit from its ``iloqApiUser``: ``serviceAddress``
is the base URL, ``customerCode``, ``username`` and the decrypted ``password``
open a session. The calls it makes, and why, are listed in docs/iloq.md.

Failures become ``IloqTransientError`` (no answer, a timeout, 429 or 5xx) or
``IloqPermanentError`` (refused credentials, a 4xx, a key iLOQ will not
order). Messages never carry the password or a request body.

The service address is a URL a unit admin typed, so every connection (to it
and to the base URL that ``Url/GetUrl`` answers) goes through the vetting
transport of ``adapters/outbound.py``: https only, no credentials, query or
fragment, public addresses only unless the operator allows private ones
(``KEYAUTOMAT_ILOQ_ALLOW_PRIVATE``). Every failure to connect, whatever its
cause (refused target, closed port, reset, timeout), is the same transient
error, so the answer cannot be used to probe ports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from keyautomat.adapters.iloq.emulator import real_estate_path
from keyautomat.adapters.outbound import (
    Resolver,
    UnsafeTarget,
    VettedTransport,
    check_url,
    system_resolve,
)
from keyautomat.domain.times import format_utc
from keyautomat.service_layer.iloq import (
    AccessRight,
    IloqApiConfig,
    IloqPermanentError,
    IloqTransientError,
    KeyInfo,
    ProgrammingRecord,
    filter_access_rights,
    sort_access_rights,
)

log = logging.getLogger(__name__)

API = "/api/v2"

# iLOQ's CanOrderKeyResultType, for readable errors when a key cannot be ordered.
CAN_ORDER_REASONS = {
    1: "the key has changes that need iLOQ Manager and a programming token",
    2: "the key is not a phone or 5 Series key",
    3: "the key licence limit is exceeded",
    4: "the key is not in planning state",
    5: "the key id is too large",
    6: "the key has security accesses outside its zones",
    7: "the key has time limits outside its zones",
    8: "the key is in the block list",
    9: "the phone key has no phone number",
    10: "the phone key has no email address",
    11: "the key has too many time limits",
    12: "the key main zone is not set",
    13: "the key has no person attached",
    14: "the external key has no tag key",
}


def _time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return format_utc(value)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("Message"), str):
        return str(body["Message"])
    return response.reason_phrase or f"HTTP {response.status_code}"


class IloqS5Client:
    """One customer's iLOQ S5 system over HTTP; keeps its session between calls."""

    def __init__(
        self,
        config: IloqApiConfig,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        allow_private: bool = False,
        resolve: Resolver = system_resolve,
    ) -> None:
        self.config = config
        self.timeout = timeout
        # A test may hand in its own transport; otherwise each client gets a vetted one.
        self.transport = transport
        self.allow_private = allow_private
        self.resolve = resolve
        self._base: str | None = None
        self._session_id: str | None = None
        # Session set-up is several calls; concurrent operations share one.
        self._login_lock = asyncio.Lock()

    @property
    def host(self) -> str:
        """The service address's host name only (never credentials a URL might carry)."""
        try:
            return urlsplit(self.config.service_address).hostname or "the service address"
        except ValueError:
            return "the service address"

    # --- transport --------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.timeout,
            transport=self.transport
            or VettedTransport(allow_private=self.allow_private, resolve=self.resolve),
            headers={"Accept": "application/json"},
        )

    def _unreachable(self, cause: BaseException) -> IloqTransientError:
        """The one error of every failure to connect; the cause goes to the log only."""
        log.info("iLOQ S5 at %s cannot be reached: %r", self.host, cause)
        return IloqTransientError(f"iLOQ S5 at {self.host} cannot be reached")

    def _base_url(self, url: str) -> str:
        """``url`` (the service address or a GetUrl answer) if it may be connected to."""
        try:
            check_url(url, allow_private=self.allow_private, allow_query=False)
        except UnsafeTarget as exc:
            raise self._unreachable(exc) from exc
        return url

    async def _send(
        self, http: httpx.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await http.request(method, url, **kwargs)
        except (httpx.HTTPError, UnsafeTarget, OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise IloqTransientError(
                f"iLOQ S5 at {self.host} answered {response.status_code}: {_message(response)}"
            )
        return response

    async def _login(self, http: httpx.AsyncClient) -> None:
        """Resolve the customer's address, open a session and select its lock group."""
        async with self._login_lock:
            if self._session_id is not None:
                return
            config = self.config
            base = self._base_url(config.service_address.rstrip("/"))
            resolved = await self._send(
                http, "POST", f"{base}{API}/Url/GetUrl", json={"CustomerCode": config.customer_code}
            )
            if resolved.status_code == 200:
                found = resolved.json()
                if isinstance(found, str) and found.strip():
                    found = found.strip().rstrip("/")
                    base = self._base_url(found if "://" in found else f"https://{found}")
            created = await self._send(
                http,
                "POST",
                f"{base}{API}/CreateSession",
                json={
                    "CustomerCode": config.customer_code,
                    "UserName": config.username,
                    "Password": config.password,
                },
            )
            body = created.json() if created.status_code == 200 else {}
            session_id = body.get("SessionID") if isinstance(body, dict) else None
            if created.status_code != 200 or body.get("Result", 0) != 0 or not session_id:
                raise IloqPermanentError(
                    f"iLOQ S5 at {self.host} refused the session for customer code "
                    f"{config.customer_code!r} and user {config.username!r}"
                )
            headers = {"SessionId": session_id}
            groups = await self._send(http, "GET", f"{base}{API}/LockGroups", headers=headers)
            listed = groups.json() if groups.status_code == 200 else []
            if not listed:
                raise IloqPermanentError(f"iLOQ S5 at {self.host} offers no lock group")
            chosen = await self._send(
                http,
                "POST",
                f"{base}{API}/SetLockgroup",
                headers=headers,
                json={"LockGroup_ID": listed[0]["LockGroup_ID"]},
            )
            if chosen.status_code != 200:
                raise IloqPermanentError(f"iLOQ S5 at {self.host} refused the lock group")
            self._base, self._session_id = base, session_id

    async def _call(
        self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """One API call in the session; an expired session is renewed once."""
        for attempt in (1, 2):
            if self._session_id is None:
                await self._login(http)
            response = await self._send(
                http,
                method,
                f"{self._base}{API}{path}",
                headers={"SessionId": self._session_id or ""},
                **kwargs,
            )
            if response.status_code == 401 and attempt == 1:
                self._session_id = None
                continue
            if response.status_code == 401:
                raise IloqPermanentError(f"iLOQ S5 at {self.host} keeps refusing the session")
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _json(self, http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._call(http, method, path, **kwargs)
        if response.status_code >= 400:
            raise IloqPermanentError(f"iLOQ S5 refused {method} {path}: {_message(response)}")
        return response.json() if response.content else None

    # --- the port ---------------------------------------------------------

    async def list_access_rights(
        self, *, search: str | None = None, default_only: bool = False
    ) -> list[AccessRight]:
        async with self._client() as http:
            accesses = await self._json(http, "GET", "/SecurityAccesses")
            estates = await self._json(http, "GET", "/RealEstates")
        tree = {e["RealEstate_ID"]: (e.get("Name") or "", e.get("Parent_ID")) for e in estates}
        rights = [
            AccessRight(
                id=a["SecurityAccess_ID"],
                name=a.get("Name") or "",
                real_estate_path=(
                    real_estate_path(tree, a["RealEstate_ID"]) if a.get("RealEstate_ID") else None
                ),
                default_access=bool(a.get("DefaultAccess", False)),
                api_enabled=bool(a.get("PublicApiEnabled", True)),
            )
            for a in accesses
        ]
        return filter_access_rights(
            sort_access_rights(rights), search=search, default_only=default_only
        )

    async def _key(self, http: httpx.AsyncClient, key_id: str) -> KeyInfo | None:
        response = await self._call(http, "GET", f"/Keys/{key_id}")
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise IloqPermanentError(f"iLOQ S5 refused GET /Keys/{key_id}: {_message(response)}")
        key = response.json()
        written = await self._json(
            http, "GET", f"/Keys/{key_id}/SecurityAccesses", params={"mode": 0}
        )
        slots = {s["SlotNo"]: s.get("LimitDateLg") for s in written.get("KeyTimeLimitSlots", [])}
        blocked = await self._json(http, "GET", "/Blacklists")
        return KeyInfo(
            id=key["FNKey_ID"],
            name=key.get("Description") or "",
            person_id=key.get("Person_ID"),
            access_right_ids=tuple(
                sorted(a["SecurityAccess_ID"] for a in written.get("SecurityAccesses", []))
            ),
            valid_from=_parse_time(slots.get(0)),
            valid_until=_parse_time(slots.get(1)),
            blocked=key_id in (blocked or {}).get("FNKey_IDs", []),
            programmed_at=None,  # iLOQ does not report it on the key
        )

    async def _existing_key(self, http: httpx.AsyncClient, key_id: str) -> KeyInfo:
        key = await self._key(http, key_id)
        if key is None:
            raise IloqPermanentError(f"key {key_id} does not exist in the locking system")
        return key

    async def get_key(self, key_id: str) -> KeyInfo | None:
        async with self._client() as http:
            return await self._key(http, key_id)

    async def create_key(self, *, key_id: str, name: str) -> KeyInfo:
        async with self._client() as http:
            await self._json(
                http, "POST", "/Keys", json={"Key": {"FNKey_ID": key_id, "Description": name}}
            )
            return await self._existing_key(http, key_id)

    async def _plan_and_order(
        self,
        http: httpx.AsyncClient,
        key_id: str,
        access_right_ids: Sequence[str],
        valid_from: datetime | None,
        valid_until: datetime | None,
    ) -> KeyInfo:
        slots: list[dict[str, Any]] = [
            {"SlotNo": number, "LimitDateLg": _time(moment), "TimeLimitData": []}
            for number, moment in ((0, valid_from), (1, valid_until))
            if moment is not None
        ]
        await self._json(
            http,
            "PUT",
            f"/Keys/{key_id}/SecurityAccesses",
            json={
                "SecurityAccessIds": list(access_right_ids),
                "TimeLimitSlots": slots,
                "KeyScheduler": {},
                "OfflineExpirationSeconds": 0,
                "OutsideUserZoneTimeLimitTitleSlots": [],
            },
        )
        verdict = await self._json(http, "GET", f"/Keys/{key_id}/CanOrder")
        if verdict != 0:
            reason = CAN_ORDER_REASONS.get(verdict, f"iLOQ answered {verdict}")
            raise IloqPermanentError(f"key {key_id} cannot be ordered: {reason}")
        await self._json(http, "POST", f"/Keys/{key_id}/Order")
        return await self._existing_key(http, key_id)

    async def program_key(
        self,
        key_id: str,
        access_right_ids: Sequence[str],
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        person_id: str | None = None,
    ) -> KeyInfo:
        async with self._client() as http:
            await self._existing_key(http, key_id)
            await self._json(
                http, "PUT", "/Keys", json={"Key": {"FNKey_ID": key_id, "Person_ID": person_id}}
            )
            return await self._plan_and_order(
                http, key_id, access_right_ids, valid_from, valid_until
            )

    async def wipe_key(self, key_id: str) -> KeyInfo:
        async with self._client() as http:
            await self._existing_key(http, key_id)
            return await self._plan_and_order(http, key_id, [], None, None)

    async def blocklist_key(self, key_id: str) -> None:
        async with self._client() as http:
            key = await self._existing_key(http, key_id)
            if key.blocked:
                return
            await self._json(http, "POST", f"/Blacklists/AddKey/{key_id}")

    async def programming_log(self, key_id: str | None = None) -> list[ProgrammingRecord]:
        """Only the emulator keeps this log; a real iLOQ system answers 404 (permanent)."""
        params = {"keyId": key_id} if key_id else {}
        async with self._client() as http:
            entries = await self._json(http, "GET", "/emulator/ProgrammingLog", params=params)
        return [
            ProgrammingRecord(
                key_id=e["FNKey_ID"],
                action=e["Action"],
                access_right_ids=tuple(e.get("SecurityAccessIds", [])),
                person_id=e.get("Person_ID"),
                valid_from=_parse_time(e.get("StartDate")),
                valid_until=_parse_time(e.get("EndDate")),
                at=_parse_time(e["TimestampUtc"]) or datetime.min.replace(tzinfo=UTC),
            )
            for e in entries
        ]
