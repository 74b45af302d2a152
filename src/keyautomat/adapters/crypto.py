"""RSA keys for service accounts, request-signature checks, and encryption of stored secrets."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class GeneratedKeyPair:
    def __init__(self, private_pem: str, public_pem: str, fingerprint: str) -> None:
        self.private_pem = private_pem
        self.public_pem = public_pem
        self.fingerprint = fingerprint


def generate_service_account_key() -> GeneratedKeyPair:
    """RSA-2048, e=65537; the private key as PKCS#1 PEM, which every official client parses."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "BEGIN RSA PRIVATE KEY"
        serialization.NoEncryption(),
    ).decode()
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return GeneratedKeyPair(private_pem, public_pem, hashlib.sha256(public_der).hexdigest())


@lru_cache(maxsize=4096)
def _load_public_key(public_pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("service account key is not RSA")
    return key


def request_hash(method: str, url: str, body: bytes) -> str:
    """Lower-case hex SHA-256 of METHOD + URL + raw body (spec/auth.md §2, step 4)."""
    return hashlib.sha256(method.encode() + url.encode() + body).hexdigest()


def string_to_sign(account_id: str, timestamp: str, digest: str) -> bytes:
    return (account_id + timestamp + digest).encode()


def verify_signature(public_pem: str, signature_b64: str, message: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256; False for malformed Base64 as for a wrong signature."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if base64.b64encode(signature).decode() != signature_b64:
        # The bits Base64 ignores before the padding would give one signature
        # sixteen spellings, each a new key for the replay cache: refuse all but
        # the canonical one.
        return False
    try:
        _load_public_key(public_pem).verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


@lru_cache(maxsize=64)
def _load_private_key(private_pem: bytes) -> rsa.RSAPrivateKey:
    # Loading checks the key's consistency, which costs far more than signing.
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA private key")
    return key


def sign(private_pem: str | bytes, message: bytes) -> str:
    """Base64 RSASSA-PKCS1-v1_5/SHA-256 signature, as the clients send in ``x-signature``."""
    data = private_pem.encode() if isinstance(private_pem, str) else private_pem
    signature = _load_private_key(data).sign(message, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


class SecretBox:
    """Symmetric encryption (Fernet) for secrets the server must read back, e.g. iLOQ passwords."""

    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)
        self._key = base64.urlsafe_b64decode(key)

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (e.g. keyed hashes of installation codes), derived
        from the secret key, so that nothing keyed with it is usable for anything else and
        a dump of the database alone cannot invert what it protects."""
        return hmac.new(
            self._key, b"keyautomat derived key: " + purpose.encode(), "sha256"
        ).digest()

    @staticmethod
    def create_key_file(key_file: Path) -> None:
        """Write a new key to ``key_file``, readable by this user only (mode 600)."""
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("stored secret cannot be decrypted with the configured key") from exc
