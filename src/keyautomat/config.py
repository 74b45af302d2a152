"""One typed settings object, read from the environment (prefix ``KEYAUTOMAT_``).

The settings that hold a password (``FILE_SETTINGS``) can also be given as
``KEYAUTOMAT_<NAME>_FILE`` pointing at a file that holds the value, so secrets
can come from a container secret mount; the secret key has its own
``KEYAUTOMAT_SECRET_KEY_FILE``.
Invalid settings stop the process at start with a message naming the setting.
"""

from __future__ import annotations

import ipaddress
import os
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

DEFAULT_SQLITE_URL = "sqlite:///keyautomat.db"
DEFAULT_SECRET_KEY_FILE = "keyautomat-secret.key"  # noqa: S105 - a file name
DEFAULT_METRICS_ALLOW = "127.0.0.1/32,::1/128"
SQLITE_REQUESTS_IN_FLIGHT = 8

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(Exception):
    """Raised when the environment holds an invalid setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYAUTOMAT_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_SQLITE_URL,
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db",
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "External base URL(s) that clients sign, e.g. https://keys.example.com/v2; "
            "several may be given separated by commas. Unset: derived from each request."
        ),
    )
    trust_forwarded_headers: bool = Field(
        default=False,
        description="Honour X-Forwarded-Proto/Host when deriving the signed URL (trusted proxy).",
    )
    signature_window_ms: int = Field(
        default=300_000, ge=1_000, le=3_600_000, description="Accepted clock skew of x-timestamp."
    )
    secret_key: str | None = Field(
        default=None,
        description="Key that encrypts stored secrets (Fernet, urlsafe base64 of 32 bytes).",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="Where the secret key is kept when KEYAUTOMAT_SECRET_KEY is unset; created "
        "(mode 600) on first use. Default: keyautomat-secret.key next to the SQLite database; "
        "on PostgreSQL, in the working directory. The process refuses to start when the key "
        "does not match the check value the database keeps (README, Secret key).",
    )
    db_threads: int = Field(
        default=8, ge=1, le=64, description="Database worker threads (PostgreSQL only)."
    )
    rate_limit_per_second: float = Field(
        default=10.0,
        ge=0,
        description="Sustained signed requests per second per service account (0: no limit).",
    )
    rate_limit_burst: int = Field(
        default=20, ge=1, description="Requests a service account may send at once above the rate."
    )
    max_requests_in_flight: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Requests this process handles at once; past it a request waits up to "
        "KEYAUTOMAT_ADMISSION_WAIT_MS for a slot (behind at most as many others), else it is "
        "refused at once with 429 and Retry-After (docs/api.md, Overload). 0: no limit. "
        "Unset: 8 on SQLite, twice KEYAUTOMAT_DB_THREADS on PostgreSQL.",
    )
    admission_wait_ms: int = Field(
        default=20,
        ge=0,
        le=10_000,
        description="Longest wait of a request for a slot when KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT "
        "are being handled (0: refuse at once).",
    )
    admission_target_ms: int = Field(
        default=0,
        ge=0,
        le=60_000,
        description="0: the limit of requests in flight stays fixed. Otherwise, while requests "
        "are turned away or queue, the limit moves (down to a quarter of "
        "KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT) so that at most 1 in 10 holds its slot longer than "
        "this; the hold includes calls to iLOQ and identity providers (docs/api.md, Overload).",
    )
    idempotency_ttl_hours: float = Field(
        default=24.0,
        gt=0,
        le=720,
        description="How long the response to a request sent with an Idempotency-Key is kept "
        "and replayed to retries with that key (docs/api.md, Idempotent requests).",
    )
    idempotency_claim_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="How long a request holding an Idempotency-Key counts as in progress; a "
        "retry after that (its process was killed mid-request) runs the request again.",
    )
    smtp_url: str | None = Field(
        default=None,
        description="Outgoing mail: smtp://[user:pass@]host:port, smtps:// for TLS, "
        "?starttls=true to require STARTTLS. Unset: email goes to the notification sink.",
    )
    email_from: str = Field(
        default="keyautomat@localhost", description="Envelope and From address of emails."
    )
    sms_gateway_url: str | None = Field(
        default=None,
        description="HTTP SMS gateway (JSON POST {to, text}); unset: SMS go to the sink.",
    )
    sms_gateway_token: str | None = Field(
        default=None, description="Bearer token sent to the SMS gateway."
    )
    notify_sink_dir: Path = Field(
        default=Path("var/notifications"),
        description="Where the development sink writes messages (notifications.jsonl) "
        "when SMTP or the SMS gateway is not configured.",
    )
    webhooks_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs over plain http and to private, loopback and "
        "link-local addresses (on-premises installs and tests); off by default (gaps.md G8).",
    )
    webhooks_timeout_seconds: float = Field(
        default=15.0, gt=0, le=120, description="Whole webhook attempt: connect and response."
    )
    webhooks_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Connecting to a webhook receiver."
    )
    webhooks_disable_after_days: float = Field(
        default=5.0,
        gt=0,
        le=365,
        description="A subscription whose receiver has failed this long (from the first failed "
        "attempt after the last success) is disabled when a delivery next exhausts its retries; "
        "its new events are kept until an admin re-enables it, and the unit's admins get one "
        "email (docs/webhooks.md, Health).",
    )
    webhooks_attempt_retention_days: float = Field(
        default=30.0,
        gt=0,
        le=3650,
        description="How long the log of webhook delivery attempts is kept; the worker prunes "
        "older entries in small batches.",
    )

    # Device link (docs/device-protocol.md).
    mqtt_url: str | None = Field(
        default=None,
        description="MQTT broker of the device link, mqtt://[user:password@]host[:port]; "
        "unset: only the in-process link (simulated automats in this process).",
    )
    mqtt_topic_prefix: str = Field(
        default="keyautomat/v1", description="Prefix of every device topic on the broker."
    )
    mqtt_client_id: str | None = Field(
        default=None,
        description="MQTT client id of the gateway (default: a random one per start); each "
        "gateway process on a broker needs its own.",
    )
    device_ack_timeout_seconds: float = Field(
        default=10.0, gt=0, description="How long sendPincode waits for the device's ack (D6)."
    )
    device_proximity_seconds: float = Field(
        default=60.0, gt=0, description="How long an automat waits for # after sendPincode (D7)."
    )
    device_heartbeat_seconds: float = Field(
        default=30.0, gt=0, description="Heartbeat interval the gateway asks devices to keep."
    )
    device_offline_after_seconds: float = Field(
        default=90.0, gt=0, description="A device silent for this long counts as offline."
    )
    device_lease_seconds: float = Field(
        default=15.0,
        ge=3,
        le=600,
        description="How long a gateway's hold on a device lasts unrenewed: after a gateway "
        "dies, its devices move to another within this time (docs/deployment.md).",
    )
    device_sync_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the gateway looks for devices behind on sync."
    )
    device_clock_skew_seconds: float = Field(
        default=300.0,
        ge=1,
        le=86400,
        description="How far ahead of the server's time a device's occurredAt may be; a later "
        "one is stored as reported but flagged, and its effects take the receive time.",
    )
    installation_pincode_ttl_hours: float = Field(
        default=72.0,
        gt=0,
        le=8760,
        description="How long an installation pincode binds hardware; replace issues a new one.",
    )
    device_rebind_window_seconds: float = Field(
        default=900.0,
        ge=0,
        le=86400,
        description="How long after binding a device that lost its welcome may bind again with "
        "the same pincode (until its first message with the issued token at the latest).",
    )
    device_hello_failures_per_device: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="Failed hellos with a pincode one hwId may send before back-off (and alarm).",
    )
    device_hello_failures_per_minute: int = Field(
        default=20,
        ge=1,
        le=100000,
        description="Failed hellos with a pincode from all devices together per minute; beyond "
        "it pincodes are refused unread until the rate drops (an error is logged once a minute).",
    )
    device_hello_backoff_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=86400,
        description="Longest back-off after failed hellos (it doubles per failure up to this).",
    )
    device_programming_deadline_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Overall deadline of programming a key before its locker opens (iLOQ).",
    )
    iloq_mode: Literal["emulator", "live"] = Field(
        default="emulator",
        description="emulator: every unit uses the built-in iLOQ S5 emulator; live: units whose "
        "iloqApiUser.serviceAddress is an http(s) URL use the iLOQ S5 public API (docs/iloq.md).",
    )
    iloq_allow_private: bool = Field(
        default=False,
        description="Allow iLOQ service addresses over plain http and to private, loopback and "
        "link-local addresses (an on-premises iLOQ system, the emulator's HTTP face in tests); "
        "off by default: a unit admin could otherwise aim the server at the internal network.",
    )
    iloq_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="Timeout of each call to an iLOQ S5 system."
    )
    iloq_access_rights_ttl_seconds: float = Field(
        default=300.0, ge=0, description="How long access rights are cached per unit (gaps C19)."
    )

    # --- Strong authentication, userVerification "2" (docs/strong-authentication.md) ---
    strong_auth_allow_private: bool = Field(
        default=False,
        description="Allow identity provider issuers over plain http and at private, loopback "
        "and link-local addresses (an on-premises provider, the loopback provider of the "
        "tests); off by default: a unit admin could otherwise aim the server at the internal "
        "network.",
    )
    strong_auth_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Timeout of each call to an identity provider."
    )
    strong_auth_link_hours: float = Field(
        default=168.0,
        gt=0,
        le=2160,
        description="How long a strong-authentication link may be used after it was sent "
        "(never past the contract's end); an admin can send a new one.",
    )
    strong_auth_retention_days: float = Field(
        default=365.0,
        gt=0,
        le=3650,
        description="How long a verification record is kept after its contract ended or was "
        "deleted; the worker deletes older ones, and login attempts a day after they expired.",
    )

    # --- Web console (docs/console.md) ---
    console_session_idle_minutes: float = Field(
        default=720.0,
        ge=5,
        le=10080,
        description="A console session ends after this long without a request.",
    )
    console_session_max_hours: float = Field(
        default=168.0, ge=1, le=8760, description="A console session ends this long after login."
    )
    console_login_failures_per_account: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Wrong passwords one console account may get before each further one "
        "blocks its logins for a doubling time (all processes count together).",
    )
    console_login_failures_per_address: int = Field(
        default=20,
        ge=1,
        le=100000,
        description="Failed console logins one client address may make before it backs off "
        "the same way (counted per API process).",
    )
    console_login_backoff_max_seconds: float = Field(
        default=900.0, gt=0, le=86400, description="Longest back-off after failed console logins."
    )
    # --- end of the web console's settings ---
    # Operations (docs/operations.md).
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: readable lines; json: one JSON object per line (time, level, "
        "logger, message, requestId, serviceAccountId, ...) for a log collector.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="Lowest level logged; `serve --log-level` overrides it for that process.",
    )
    ready_outbox_lag_seconds: float = Field(
        default=300.0,
        ge=1,
        le=86400,
        description="GET /readyz fails its outbox check when a message the workers could "
        "deliver has waited longer than this (no worker running, or all of them stuck).",
    )
    # --- metrics (docs/operations.md, Metrics) ---
    metrics_allow: str = Field(
        default=DEFAULT_METRICS_ALLOW,
        max_length=4096,
        description="Client networks (CIDR, comma-separated) that may read GET /metrics, judged "
        "by the TCP peer; empty: none. A request through a proxy (Forwarded, X-Forwarded-For, "
        "X-Real-IP) needs KEYAUTOMAT_METRICS_TOKEN whatever its address.",
    )
    metrics_token: str | None = Field(
        default=None,
        max_length=512,
        description="When set, GET /metrics also needs Authorization: Bearer <token> "
        "(KEYAUTOMAT_METRICS_TOKEN_FILE may hold it).",
    )
    # --- end of the metrics settings ---

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("metrics_allow")
    @classmethod
    def _check_metrics_allow(cls, value: str) -> str:
        _networks(value)
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.strip().isprintable() or " " in value.strip():
            raise ValueError("must be printable text without spaces")
        return value.strip()

    @cached_property
    def metrics_networks(self) -> tuple[IpNetwork, ...]:
        return _networks(self.metrics_allow)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in {"sqlite", "postgresql+psycopg", "postgresql"}:
            raise ValueError(
                "must start with sqlite:/// or postgresql+psycopg:// (got scheme "
                f"{scheme or 'none'!r})"
            )
        if scheme == "postgresql":
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @field_validator("smtp_url")
    @classmethod
    def _check_smtp_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("must look like smtp://[user:pass@]host:port or smtps://host:port")
        return value.strip()

    @field_validator("sms_gateway_url")
    @classmethod
    def _check_sms_gateway_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.strip()

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"mqtt", "tcp"} or not parts.hostname:
            raise ValueError(f"{value!r} is not an mqtt://host[:port] URL")
        return value.strip()

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for base in value.split(","):
            parts = urlsplit(base.strip())
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise ValueError(f"{base.strip()!r} is not an absolute http(s) URL")
            if parts.query or parts.fragment:
                raise ValueError(f"{base.strip()!r} must not carry a query or fragment")
        return value

    @cached_property
    def public_bases(self) -> tuple[str, ...]:
        """Configured bases with scheme and host lower-cased and default ports dropped."""
        if self.public_url is None:
            return ()
        bases = []
        for raw in self.public_url.split(","):
            parts = urlsplit(raw.strip())
            scheme = parts.scheme.lower()
            host = (parts.hostname or "").lower()
            port = parts.port
            if port is not None and (scheme, port) not in {("http", 80), ("https", 443)}:
                host = f"{host}:{port}"
            bases.append(f"{scheme}://{host}{parts.path.rstrip('/')}")
        return tuple(bases)

    @property
    def secret_key_path(self) -> Path:
        """The key file: as configured, else next to the SQLite database file.

        A default relative to the working directory made a server started from
        another folder create a new key and lose every stored secret.
        """
        if self.secret_key_file is not None:
            return self.secret_key_file
        database = sqlite_database_path(self.database_url)
        folder = database.parent if database is not None else Path()
        return folder / DEFAULT_SECRET_KEY_FILE

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over TLS: the configured public URL is https (docs/console.md)."""
        return any(base.startswith("https://") for base in self.public_bases)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def requests_in_flight_limit(self) -> int:
        """KEYAUTOMAT_MAX_REQUESTS_IN_FLIGHT, or its default for the engine (0: no limit).

        SQLite runs all database work on one thread: a few requests in flight keep it busy
        while others parse and verify on the event loop, and every one more only queues
        (docs/performance/overload.md). PostgreSQL works on ``db_threads`` connections.
        """
        if self.max_requests_in_flight is not None:
            return self.max_requests_in_flight
        return SQLITE_REQUESTS_IN_FLIGHT if self.is_sqlite else 2 * self.db_threads


def _networks(value: str) -> tuple[IpNetwork, ...]:
    """``10.0.0.0/8, ::1`` as networks; a bare address is a network of one."""
    networks = []
    for part in value.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"{part.strip()!r} is not an IP network such as 10.0.0.0/8"
                ) from None
    return tuple(networks)


def sqlite_database_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL; None for other engines and in-memory databases."""
    if not url.startswith("sqlite:"):
        return None
    database = make_url(url).database
    if database in (None, "", ":memory:"):
        return None
    return Path(database)


FILE_SETTINGS = ("DATABASE_URL", "SMTP_URL", "SMS_GATEWAY_TOKEN", "MQTT_URL", "METRICS_TOKEN")
"""Settings that hold a password and may come from a file, ``KEYAUTOMAT_<NAME>_FILE``."""


def _apply_file_variables() -> None:
    """Copy ``KEYAUTOMAT_X_FILE`` contents into ``KEYAUTOMAT_X`` (the secret key has its own)."""
    for name in FILE_SETTINGS:
        file_var = f"KEYAUTOMAT_{name}_FILE"
        if file_var in os.environ and f"KEYAUTOMAT_{name}" not in os.environ:
            os.environ[f"KEYAUTOMAT_{name}"] = Path(os.environ[file_var]).read_text().strip()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise SettingsError with a readable message."""
    _apply_file_variables()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"KEYAUTOMAT_{field.upper()}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from exc
