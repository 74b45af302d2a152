"""A small signing client for the V2 API, as integrators and our own tests use it.

It signs exactly as the official clients do (spec/auth.md §2): the full URL
string, the exact body bytes on the wire (compact JSON), and an empty body for
requests without one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

from keyautomat.adapters.crypto import request_hash, sign, string_to_sign


def compact_json(payload: Any) -> str:
    """Serialise like ``JSON.stringify``: no spaces, non-ASCII kept as is."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def signature_headers(
    *,
    method: str,
    url: str,
    body: str | bytes,
    service_account_id: str,
    private_key_pem: str | bytes,
    timestamp_ms: int | None = None,
) -> dict[str, str]:
    """The three signing headers for one request."""
    timestamp = str(timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000)
    raw = body.encode() if isinstance(body, str) else body
    digest = request_hash(method.upper(), url, raw)
    return {
        "x-service-account-id": service_account_id,
        "x-timestamp": timestamp,
        "x-signature": sign(private_key_pem, string_to_sign(service_account_id, timestamp, digest)),
    }


class Transport(Protocol):
    """Anything with httpx's ``request`` signature: an ``httpx.Client``, or a test client."""

    def request(self, method: str, url: str, *, content: Any = ..., headers: Any = ...) -> Any: ...


class ApiError(Exception):
    def __init__(self, response: Any) -> None:
        super().__init__(f"{response.status_code}: {response.text}")
        self.response = response
        self.status_code: int = response.status_code


class Client:
    """Signs and sends V2 requests. ``base_url`` includes ``/v2``, e.g. ``http://127.0.0.1:8080/v2``.

    Pass ``http`` to reuse an existing ``httpx.Client`` (for instance a test client
    bound to an in-process app).
    """

    def __init__(
        self,
        base_url: str,
        service_account_id: str,
        private_key_pem: str | bytes,
        *,
        http: Transport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.service_account_id = service_account_id
        self.private_key_pem = private_key_pem
        self._owned = httpx.Client(timeout=30) if http is None else None
        self.http: Transport = http if http is not None else self._owned  # type: ignore[assignment]
        self._last_timestamp = 0

    def close(self) -> None:
        """Close the HTTP connection pool this client opened (not one it was given)."""
        if self._owned is not None:
            self._owned.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def from_key_file(
        cls, base_url: str, service_account_id: str, key_file: str | Path, **kwargs: Any
    ) -> Client:
        return cls(base_url, service_account_id, Path(key_file).read_bytes(), **kwargs)

    def _timestamp(self) -> int:
        # Two identical requests signed in the same millisecond would carry the
        # same signature and the second would be refused as a replay, so the
        # client never reuses a timestamp.
        now = time.time_ns() // 1_000_000
        self._last_timestamp = max(now, self._last_timestamp + 1)
        return self._last_timestamp

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        raw_body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a signed request; ``path`` is relative to the base URL and may carry a query."""
        url = self.base_url + path
        body: str | bytes = ""
        if raw_body is not None:
            body = raw_body
        elif json_body is not None:
            body = compact_json(json_body)
        content = body.encode() if isinstance(body, str) else body
        signed = signature_headers(
            method=method,
            url=url,
            body=content,
            service_account_id=self.service_account_id,
            private_key_pem=self.private_key_pem,
            timestamp_ms=self._timestamp(),
        )
        all_headers = {"content-type": "application/json", **signed, **(headers or {})}
        return self.http.request(method, url, content=content or None, headers=all_headers)

    def call(self, method: str, path: str, json_body: Any = None) -> Any:
        """Send a signed request and return the decoded JSON; raise ApiError on non-2xx."""
        response = self.request(method, path, json_body)
        if response.status_code >= 300:
            raise ApiError(response)
        return response.json() if response.content else None

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.call("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def delete(self, path: str, body: Any = None) -> Any:
        return self.call("DELETE", path, body)
