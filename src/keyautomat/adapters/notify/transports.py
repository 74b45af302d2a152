"""Transports for notifications: SMTP email, an HTTP SMS gateway, and a development sink.

Each judges its own failures: a refusal that will not change on retry (a
rejected address, a 4xx from the gateway) raises :class:`GiveUp`; anything
that may pass (connection refused, timeouts, 5xx, 429) raises
:class:`RetryLater`.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from dataclasses import asdict, dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import httpx

from keyautomat.service_layer.delivery import GiveUp, RetryLater
from keyautomat.service_layer.notify_sender import Email, Sms

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None  # None: upgrade when the server offers it

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """``smtp://[user:pass@]host:port``, ``smtps://`` for TLS, ``?starttls=true``."""
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("must look like smtp://[user:pass@]host:port or smtps://...")
        query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        use_tls = parts.scheme == "smtps"
        start_tls = None if "starttls" not in query else query["starttls"] in _TRUE
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if use_tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=False if use_tls else start_tls,
        )


def build_email(email: Email, sender: str) -> EmailMessage:
    message = EmailMessage()
    address = Address(addr_spec=sender)
    if email.sender_name:
        address = Address(display_name=email.sender_name, addr_spec=sender)
    message["From"] = address
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = email.message_id
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message.set_content(email.text)
    if email.html:
        message.add_alternative(email.html, subtype="html")
    return message


def without(address: str, text: str) -> str:
    """``text`` with the recipient's ``address`` (an email address, or a phone number
    with or without its ``+``) replaced by ``<recipient>``. A mail server's or SMS
    gateway's refusal often quotes it, and the reason is logged and kept in the outbox."""
    for form in {address, address.lstrip("+")}:
        if form:
            text = re.sub(re.escape(form), "<recipient>", text, flags=re.IGNORECASE)
    return text


class SmtpTransport:
    def __init__(self, url: str, sender: str, *, timeout: float = 20.0) -> None:
        self.config = SmtpConfig.from_url(url)
        self.sender = sender
        self.timeout = timeout

    async def send_email(self, email: Email) -> None:
        c = self.config
        try:
            await aiosmtplib.send(
                build_email(email, self.sender),
                hostname=c.host,
                port=c.port,
                username=c.username,
                password=c.password,
                use_tls=c.use_tls,
                start_tls=c.start_tls,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            reason = without(email.to, "; ".join(f"{r.code} {r.message}" for r in exc.recipients))
            if all(400 <= code < 500 for code in codes):
                raise RetryLater(f"recipient deferred: {reason}") from exc
            raise GiveUp(f"recipient refused: {reason}") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A configuration problem, not this message's: keep it for when it is fixed.
            raise RetryLater(f"SMTP authentication failed: {exc.code} {exc.message}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            answer = without(email.to, f"{exc.code} {exc.message}")
            if 500 <= exc.code < 600:
                raise GiveUp(f"SMTP refused: {answer}") from exc
            raise RetryLater(f"SMTP deferred: {answer}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RetryLater(f"SMTP unavailable: {type(exc).__name__}: {exc}") from exc


class HttpSmsGateway:
    """``POST <url>`` with ``Authorization: Bearer <token>`` and JSON
    ``{"to": "+358401234567", "text": "...", "from": <sender id or null>, "id": <stable id>}``.

    Any 2xx is success. 408, 425, 429 and 5xx are retried on the worker's
    schedule; any other 4xx is a permanent refusal.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.token = token
        self.client = client
        self.timeout = timeout
        # Loading the CA bundle costs ~30 ms of CPU; do it once, not per message.
        self._tls = ssl.create_default_context()

    async def send_sms(self, sms: Sms) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": sms.message_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = {"to": sms.to, "text": sms.text, "from": sms.sender_id, "id": sms.message_id}
        try:
            if self.client is not None:
                response = await self.client.post(
                    self.url, json=body, headers=headers, timeout=self.timeout
                )
            else:
                async with httpx.AsyncClient(timeout=self.timeout, verify=self._tls) as client:
                    response = await client.post(self.url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RetryLater(f"SMS gateway unreachable: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"SMS gateway answered {status}: {without(sms.to, response.text[:200])}"
        if status in {408, 425, 429} or status >= 500:
            raise RetryLater(detail)
        raise GiveUp(detail)


class SinkTransport:
    """Development: each message becomes one JSON line in ``<dir>/notifications.jsonl``
    (and one line in the log), so ``make run`` shows what would have been sent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, channel: str, record: dict[str, object]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"channel": channel, **record}, ensure_ascii=False)
        with (self.directory / "notifications.jsonl").open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        # Not the recipient: logs carry no contact details (docs/operations.md, "Logs").
        log.info("notification (%s) written to %s", channel, self.directory)

    async def send_email(self, email: Email) -> None:
        self._write("email", asdict(email))

    async def send_sms(self, sms: Sms) -> None:
        self._write("sms", asdict(sms))
