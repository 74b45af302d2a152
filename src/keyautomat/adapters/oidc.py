"""OpenID Connect relying party: the identity step of strong authentication.

Authorization code flow with PKCE (S256), built on Authlib's OAuth 2.0 and
OpenID Connect pieces (authorization request, token request and client
authentication, discovery metadata and ID token claim validation) and on
joserfc (the same authors' JOSE library) for the token's signature against the
provider's JWKS. Authlib's own httpx integration is not used: it is deprecated
for plain httpx, and every request here must go through the vetted transport
(``adapters/outbound.py``) like any connection to an address a tenant chose.

Nothing here touches the database; docs/strong-authentication.md has the flow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from keyautomat.adapters.outbound import Resolver, UnsafeTarget, VettedTransport, check_url
from keyautomat.adapters.outbound import system_resolve as default_resolve

log = logging.getLogger(__name__)

# Asymmetric signatures only: verified with the provider's published keys. HS256 would
# be keyed with the client secret (anybody holding it could mint tokens), "none" is none.
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
# Clock skew allowed between the provider and us when checking exp, iat and nbf.
LEEWAY_SECONDS = 60
# No answer of a provider needs more: a bound, so that a hostile one cannot exhaust memory.
MAX_RESPONSE_BYTES = 256 * 1024
MAX_ID_TOKEN = 16 * 1024
# Discovery documents and key sets are kept this long per process; an unknown key id
# fetches the key set again at once (a provider rotating its keys).
CACHE_SECONDS = 600.0


class ProviderError(Exception):
    """The identity step failed. ``reason`` is safe to show a person: it never carries a
    provider's answer verbatim, a secret or a stack trace."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProviderUnreachable(ProviderError):
    """The provider could not be asked (network, refused address, a malformed answer)."""


class LoginRefused(ProviderError):
    """The provider answered the token request with an OAuth error (e.g. ``invalid_grant``)."""


class TokenRejected(ProviderError):
    """The ID token failed a check: signature, issuer, audience, nonce, time, method."""


class SignatureRejected(TokenRejected):
    """No key of the provider's key set verifies the ID token's signature."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What the relying party uses of a discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_auth_method: str  # client_secret_basic or client_secret_post


@dataclass(frozen=True, slots=True)
class TokenResponse:
    id_token: str
    access_token: str | None


def parse_metadata(issuer: str, document: Any, *, allow_private: bool) -> ProviderMetadata:
    """Check a discovery document (OpenID Connect Discovery 1.0, Authlib's validation)
    against the issuer it was fetched for; ``ProviderUnreachable`` with the reason."""
    if not isinstance(document, dict):
        raise ProviderUnreachable("the discovery document is not a JSON object")
    try:
        OpenIDProviderMetadata(document).validate()
    except (ValueError, TypeError, KeyError) as exc:
        raise ProviderUnreachable(f"the discovery document is not valid: {exc}") from exc
    # Discovery §4.3: the document must name exactly the issuer it was asked for.
    if document.get("issuer") != issuer:
        raise ProviderUnreachable("the discovery document names another issuer")
    if "code" not in document.get("response_types_supported", ()):
        raise ProviderUnreachable("the provider does not offer the authorization code flow")
    methods = document.get("code_challenge_methods_supported")
    if methods is not None and "S256" not in methods:
        raise ProviderUnreachable("the provider does not offer PKCE with S256")
    algorithms = document.get("id_token_signing_alg_values_supported") or ()
    if not set(algorithms) & set(ALGORITHMS):
        raise ProviderUnreachable("the provider signs ID tokens with no asymmetric algorithm")
    endpoints = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        url = document.get(name)
        if not isinstance(url, str):
            raise ProviderUnreachable(f"the discovery document has no {name}")
        try:
            check_url(url, allow_private=allow_private)
        except UnsafeTarget as exc:
            raise ProviderUnreachable(f"{name} {exc.reason}") from exc
        endpoints[name] = url
    auth_methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" in auth_methods:
        auth_method = "client_secret_basic"
    elif "client_secret_post" in auth_methods:
        auth_method = "client_secret_post"
    else:
        raise ProviderUnreachable("the provider accepts no client secret at its token endpoint")
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=endpoints["authorization_endpoint"],
        token_endpoint=endpoints["token_endpoint"],
        jwks_uri=endpoints["jwks_uri"],
        token_auth_method=auth_method,
    )


# --- one login ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginSecrets:
    """The nonce and PKCE verifier of a login, derived from its state with a server key:
    nothing but the state's hash needs to be stored, and the database alone does not
    give the verifier (docs/strong-authentication.md)."""

    nonce: str
    code_verifier: str


def login_secrets(key: bytes, state: str) -> LoginSecrets:
    def derive(purpose: bytes) -> str:
        digest = hmac.new(key, purpose + b"\0" + state.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    # 43 characters from the unreserved set: what RFC 7636 §4.1 asks of a verifier.
    return LoginSecrets(nonce=derive(b"nonce"), code_verifier=derive(b"pkce"))


def authorization_url(
    metadata: ProviderMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    secrets: LoginSecrets,
    acr_values: Sequence[str] = (),
    ui_locales: str | None = None,
) -> str:
    """Where the guest's browser goes: the provider's login, asked for a fresh one."""
    # The stubs leave these two of Authlib's helpers untyped.
    challenge: str = create_s256_code_challenge(secrets.code_verifier)  # type: ignore[no-untyped-call]
    extra: dict[str, str] = {
        "nonce": secrets.nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        # A session left at the provider by someone else on this device must not answer.
        "prompt": "login",
    }
    if acr_values:
        extra["acr_values"] = " ".join(acr_values)
    if ui_locales:
        extra["ui_locales"] = ui_locales
    url: str = prepare_grant_uri(
        metadata.authorization_endpoint,
        client_id=client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=" ".join(scopes),
        state=state,
        **extra,
    )
    return url


def check_id_token(
    id_token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    now: datetime,
    access_token: str | None = None,
    acr_values: Sequence[str] = (),
) -> dict[str, Any]:
    """The claims of ``id_token`` once every check holds (OpenID Connect Core §3.1.3.7):
    an asymmetric signature by one of ``keys``, the issuer, this client as audience (and
    authorized party), the nonce of this login, exp/iat/nbf against ``now`` with
    ``LEEWAY_SECONDS``, at_hash, a subject, and the authentication method when the unit
    asks for one. ``TokenRejected`` names the failed check."""
    if len(id_token) > MAX_ID_TOKEN:
        raise TokenRejected("the ID token is too large")
    try:
        token = jwt.decode(id_token, keys, algorithms=list(ALGORITHMS))
    except (JoseError, ValueError) as exc:
        raise SignatureRejected("the ID token's signature is not valid") from exc
    claims = CodeIDToken(
        token.claims,
        dict(token.header),
        options={
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True},
        },
        params={"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    try:
        claims.validate(now=int(now.timestamp()), leeway=LEEWAY_SECONDS)
    except ExpiredTokenError as exc:
        raise TokenRejected("the ID token has expired") from exc
    except ClaimError as exc:
        raise TokenRejected(f"the ID token's {exc.claim} is not valid") from exc
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise TokenRejected("the ID token is not valid") from exc
    subject = claims.get("sub")
    if not isinstance(subject, str) or not 1 <= len(subject) <= 255:
        raise TokenRejected("the ID token's sub is not valid")
    if acr_values and claims.get("acr") not in acr_values:
        raise TokenRejected("the login did not use the authentication method this unit requires")
    return dict(claims)


def subject_hash(key: bytes, issuer: str, subject: str) -> str:
    """A keyed hash of who logged in (some providers' subjects are national ids): it tells
    two verifications by one person apart from two by different people, and nothing
    more to whoever holds only the database."""
    message = issuer.encode() + b"\0" + subject.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# --- talking to providers -----------------------------------------------------------------


class _CappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.limit:
                raise ProviderUnreachable("the identity provider's answer is too large")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class _CappedTransport(httpx.AsyncBaseTransport):
    """Reads at most ``limit`` bytes of any answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        self.inner = inner
        self.limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, self.limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class OidcProviders:
    """The identity providers of every unit, as one client: discovery and key sets
    cached per issuer, every connection vetted, every answer bounded."""

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout: float,
        resolve: Resolver = default_resolve,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.resolve = resolve
        self.transport = transport
        self.monotonic = monotonic
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}
        self._keys: dict[str, tuple[float, KeySet]] = {}
        self._http: httpx.AsyncClient | None = None

    def check_issuer(self, issuer: str) -> None:
        """The syntax rules of an issuer URL (``UnsafeTarget`` with the reason)."""
        check_url(issuer, allow_private=self.allow_private, allow_query=False)

    def _client(self) -> httpx.AsyncClient:
        """One client for the process's life: a vetted transport costs ~0.1 s to build
        (its TLS context), and keeping it keeps connections to the providers alive."""
        if self._http is None:
            inner = self.transport or VettedTransport(
                allow_private=self.allow_private, resolve=self.resolve
            )
            self._http = httpx.AsyncClient(
                transport=_CappedTransport(inner, MAX_RESPONSE_BYTES),
                timeout=self.timeout,
                follow_redirects=False,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _get_json(self, url: str) -> Any:
        try:
            response = await self._client().get(url, headers={"Accept": "application/json"})
        except ProviderUnreachable:
            raise
        except (httpx.HTTPError, UnsafeTarget, OSError) as exc:
            log.warning("identity provider not reachable at %s: %s", url, type(exc).__name__)
            raise ProviderUnreachable("the identity provider could not be reached") from exc
        if response.status_code != 200:
            raise ProviderUnreachable(
                f"the identity provider answered {response.status_code} at {url}"
            )
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise ProviderUnreachable(
                f"the identity provider's answer at {url} is not JSON"
            ) from exc

    def _fresh(self, cached: tuple[float, Any] | None) -> bool:
        return cached is not None and self.monotonic() - cached[0] < CACHE_SECONDS

    async def metadata(self, issuer: str, *, fresh: bool = False) -> ProviderMetadata:
        cached = self._metadata.get(issuer)
        if not fresh and cached is not None and self._fresh(cached):
            return cached[1]
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        found = parse_metadata(issuer, await self._get_json(url), allow_private=self.allow_private)
        self._metadata[issuer] = (self.monotonic(), found)
        return found

    async def keys(self, metadata: ProviderMetadata, *, fresh: bool = False) -> KeySet:
        cached = self._keys.get(metadata.jwks_uri)
        if not fresh and cached is not None and self._fresh(cached):
            return cached[1]
        document = await self._get_json(metadata.jwks_uri)
        try:
            found = KeySet.import_key_set(document)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderUnreachable("the identity provider's key set is not valid") from exc
        self._keys[metadata.jwks_uri] = (self.monotonic(), found)
        return found

    async def exchange(
        self,
        metadata: ProviderMetadata,
        *,
        client_id: str,
        client_secret: str,
        code: str,
        code_verifier: str,
        redirect_uri: str,
    ) -> TokenResponse:
        """The token request of the authorization code grant (RFC 6749 §4.1.3, RFC 7636)."""
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        auth = ClientAuth(client_id, client_secret, metadata.token_auth_method)
        prepared = auth.prepare("POST", metadata.token_endpoint, headers, body)  # type: ignore[no-untyped-call]
        url, headers, body = prepared
        try:
            response = await self._client().post(url, content=body, headers=headers)
        except ProviderUnreachable:
            raise
        except (httpx.HTTPError, UnsafeTarget, OSError) as exc:
            log.warning("token endpoint not reachable: %s", type(exc).__name__)
            raise ProviderUnreachable("the identity provider could not be reached") from exc
        try:
            answer = json.loads(response.content)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ProviderUnreachable(
                f"the identity provider's token endpoint answered {response.status_code}"
            )
        error = answer.get("error")
        if error is not None or response.status_code != 200:
            code_name = error if isinstance(error, str) and error.isidentifier() else "error"
            log.info("token request refused by the identity provider: %s", code_name[:64])
            raise LoginRefused(f"the identity provider refused the login ({code_name[:64]})")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise TokenRejected("the identity provider sent no ID token")
        access = answer.get("access_token")
        return TokenResponse(id_token, access if isinstance(access, str) else None)

    async def verify(
        self,
        metadata: ProviderMetadata,
        id_token: str,
        *,
        client_id: str,
        nonce: str,
        now: datetime,
        access_token: str | None = None,
        acr_values: Sequence[str] = (),
    ) -> dict[str, Any]:
        """:func:`check_id_token` with the provider's keys; a signature that no cached key
        verifies is tried once more with the key set fetched again (key rotation)."""

        def check(keys: KeySet) -> dict[str, Any]:
            return check_id_token(
                id_token,
                keys,
                issuer=metadata.issuer,
                client_id=client_id,
                nonce=nonce,
                now=now,
                access_token=access_token,
                acr_values=acr_values,
            )

        try:
            return check(await self.keys(metadata))
        except SignatureRejected:
            return check(await self.keys(metadata, fresh=True))
