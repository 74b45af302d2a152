"""The relying party's checks without a database or a provider (adapters/oidc.py): ID tokens
signed here with keys made here, discovery documents, the authorization request, and the
client's handling of key rotation and oversized answers over an in-memory transport."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from keyautomat.adapters.oidc import (
    MAX_RESPONSE_BYTES,
    OidcProviders,
    ProviderMetadata,
    ProviderUnreachable,
    SignatureRejected,
    TokenRejected,
    authorization_url,
    check_id_token,
    login_secrets,
    parse_metadata,
    subject_hash,
)
from keyautomat.adapters.outbound import UnsafeTarget

ISSUER = "https://idp.example"
CLIENT = "keyautomat"
NONCE = "n-0S6_WzA2Mj"
NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
KEYS = KeySet.import_key_set({"keys": [KEY.as_dict(private=False)]})
METADATA = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/authorize",
    token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/jwks",
    token_auth_method="client_secret_basic",
)


def _token(key: Any = KEY, alg: str = "RS256", kid: str | None = "k1", **claims: Any) -> str:
    now = int(NOW.timestamp())
    body = {
        "iss": ISSUER,
        "sub": "248289761001",
        "aud": CLIENT,
        "exp": now + 300,
        "iat": now,
        "nonce": NONCE,
        **claims,
    }
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, {k: v for k, v in body.items() if v is not None}, key)


def _check(token: str, **options: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"issuer": ISSUER, "client_id": CLIENT, "nonce": NONCE, "now": NOW}
    return check_id_token(token, KEYS, **{**values, **options})


def test_a_token_that_meets_every_check_gives_its_claims() -> None:
    claims = _check(_token(email="a@example.com"))
    assert claims["sub"] == "248289761001"
    assert claims["email"] == "a@example.com"
    # A list audience holding this client, with this client as authorized party.
    assert _check(_token(aud=[CLIENT, "other"], azp=CLIENT))["sub"]


def test_a_signature_by_another_key_a_symmetric_one_or_none_is_refused() -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(SignatureRejected):
        _check(_token(key=stranger))
    with pytest.raises(SignatureRejected):
        _check(_token(key=OctKey.generate_key(256), alg="HS256", kid=None))
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    unsigned = header + "." + _token().split(".")[1] + "."
    with pytest.raises(SignatureRejected):
        _check(unsigned)
    with pytest.raises(SignatureRejected):
        _check("not a token")


@pytest.mark.parametrize(
    ("claims", "options", "reason"),
    [
        ({"iss": "https://evil.example"}, {}, "iss"),
        ({"aud": "another-client"}, {}, "aud"),
        ({"aud": [CLIENT, "other"]}, {}, "azp"),
        ({"aud": [CLIENT, "other"], "azp": "other"}, {}, "azp"),
        ({"nonce": "replayed"}, {}, "nonce"),
        ({"nonce": None}, {}, "nonce"),
        ({"sub": None}, {}, "sub"),
        ({"iat": int(NOW.timestamp()) + 3600}, {}, "iat"),
        ({"nbf": int(NOW.timestamp()) + 3600}, {}, "nbf"),
        ({"exp": int(NOW.timestamp()) - 61}, {}, "expired"),
        ({"sub": "x" * 300}, {}, "sub"),
        ({"acr": "password"}, {"acr_values": ("urn:bankid",)}, "method"),
    ],
)
def test_a_token_failing_a_check_is_refused_naming_it(
    claims: dict[str, Any], options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(TokenRejected) as refused:
        _check(_token(**claims), **options)
    assert reason in refused.value.reason


def test_the_clock_skew_allowed_is_a_minute() -> None:
    assert _check(_token(exp=int(NOW.timestamp()) - 59))
    assert _check(_token(acr="urn:bankid"), acr_values=("urn:bankid",))


def test_an_oversized_token_is_refused_unread() -> None:
    with pytest.raises(TokenRejected):
        _check(_token(padding="x" * 20000))


# --- discovery ----------------------------------------------------------------------------


def _document(**changes: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        **changes,
    }


def test_a_discovery_document_gives_the_endpoints_and_the_client_authentication() -> None:
    found = parse_metadata(ISSUER, _document(), allow_private=False)
    assert found.token_endpoint == f"{ISSUER}/token"
    assert found.token_auth_method == "client_secret_basic"
    post_only = _document(token_endpoint_auth_methods_supported=["client_secret_post"])
    assert parse_metadata(ISSUER, post_only, allow_private=False).token_auth_method == (
        "client_secret_post"
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"issuer": "https://other.example"},
        {"response_types_supported": ["id_token"]},
        {"code_challenge_methods_supported": ["plain"]},
        {"id_token_signing_alg_values_supported": ["HS256"]},
        {"token_endpoint": "http://idp.example/token"},
        {"jwks_uri": "https://10.0.0.1/jwks"},
        {"token_endpoint_auth_methods_supported": ["private_key_jwt"]},
        {"jwks_uri": None},
    ],
)
def test_a_discovery_document_we_cannot_use_safely_is_refused(changes: dict[str, Any]) -> None:
    document = {k: v for k, v in _document(**changes).items() if v is not None}
    with pytest.raises(ProviderUnreachable):
        parse_metadata(ISSUER, document, allow_private=False)
    with pytest.raises(ProviderUnreachable):
        parse_metadata(ISSUER, ["not", "an", "object"], allow_private=False)


# --- the authorization request ------------------------------------------------------------


def test_the_login_secrets_are_derived_from_the_state_and_differ_per_login() -> None:
    key = b"k" * 32
    first, again, other = (login_secrets(key, s) for s in ("state-1", "state-1", "state-2"))
    assert first == again
    assert first.nonce != other.nonce
    assert first.code_verifier != other.code_verifier
    assert first.nonce != first.code_verifier
    assert len(first.code_verifier) == 43  # RFC 7636: 43 to 128 unreserved characters
    assert login_secrets(b"j" * 32, "state-1") != first


def test_the_authorization_request_asks_a_fresh_login_with_pkce_s256() -> None:
    secrets = login_secrets(b"k" * 32, "state-1")
    url = authorization_url(
        METADATA,
        client_id=CLIENT,
        redirect_uri="https://keys.example/identify/callback",
        scopes=("openid", "email"),
        state="state-1",
        secrets=secrets,
        acr_values=("urn:bankid",),
        ui_locales="fi",
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == METADATA.authorization_endpoint
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(secrets.code_verifier.encode()).digest()
    ).rstrip(b"=")
    assert query == {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": "https://keys.example/identify/callback",
        "scope": "openid email",
        "state": "state-1",
        "nonce": secrets.nonce,
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
        "prompt": "login",
        "acr_values": "urn:bankid",
        "ui_locales": "fi",
    }


def test_the_subject_is_kept_as_a_keyed_hash() -> None:
    one = subject_hash(b"k" * 32, ISSUER, "010190-123A")
    assert len(one) == 64
    assert "010190" not in one
    assert subject_hash(b"j" * 32, ISSUER, "010190-123A") != one
    assert subject_hash(b"k" * 32, "https://other.example", "010190-123A") != one


# --- the client ---------------------------------------------------------------------------


class _Provider:
    """An in-memory provider answering discovery and its key set (rotating on demand)."""

    def __init__(self) -> None:
        self.keys = [KEY]
        self.jwks_fetches = 0
        self.padding = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={**_document(), "x": "y" * self.padding})
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": [k.as_dict(private=False) for k in self.keys]})
        return httpx.Response(404)


def _client(provider: _Provider) -> OidcProviders:
    return OidcProviders(
        allow_private=False, timeout=5, transport=httpx.MockTransport(provider.handle)
    )


def test_a_rotated_key_is_fetched_once_and_a_cached_key_set_is_reused() -> None:
    provider = _Provider()
    client = _client(provider)

    async def verify(token: str) -> dict[str, Any]:
        metadata = await client.metadata(ISSUER)
        return await client.verify(metadata, token, client_id=CLIENT, nonce=NONCE, now=NOW)

    assert asyncio.run(verify(_token()))["sub"]
    assert asyncio.run(verify(_token()))["sub"]
    assert provider.jwks_fetches == 1
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    provider.keys = [KEY, rotated]
    assert asyncio.run(verify(_token(key=rotated, kid="k2")))["sub"]
    assert provider.jwks_fetches == 2
    with pytest.raises(SignatureRejected):
        asyncio.run(verify(_token(key=RSAKey.generate_key(2048, parameters={"kid": "k3"}))))


def test_an_oversized_answer_is_not_read_whole() -> None:
    provider = _Provider()
    provider.padding = MAX_RESPONSE_BYTES
    with pytest.raises(ProviderUnreachable) as refused:
        asyncio.run(_client(provider).metadata(ISSUER))
    assert "too large" in refused.value.reason


def test_an_issuer_that_is_not_https_or_is_private_is_refused_unless_allowed() -> None:
    strict = OidcProviders(allow_private=False, timeout=5)
    for issuer in ("http://idp.example", "https://127.0.0.1", "https://idp.example?x=1"):
        with pytest.raises(UnsafeTarget):
            strict.check_issuer(issuer)
    OidcProviders(allow_private=True, timeout=5).check_issuer("http://127.0.0.1:8080")
