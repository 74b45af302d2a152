"""Tables of strong authentication (userVerification "2", docs/strong-authentication.md).

Core statements only, in ``contracts/mechanical/identity.py``: an identity
provider per unit, the logins started from a verification link, and the record
of each verified contract.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text

from keyautomat.adapters.orm import UtcDateTime, metadata

# A unit's OpenID Connect provider. The client secret is encrypted with the server's
# key (SecretBox); scopes, match rules and acr values are JSON lists.
strong_auth_providers = Table(
    "strong_auth_providers",
    metadata,
    Column(
        "organization_unit_id", String(24), ForeignKey("organization_units.id"), primary_key=True
    ),
    Column("issuer", String(512), nullable=False),
    Column("client_id", String(256), nullable=False),
    Column("client_secret_encrypted", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("match_rules", Text, nullable=False),
    Column("acr_values", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# One row per login sent to a provider: keyed by the SHA-256 of its state (the state
# itself is only in the browser), with the hash of the link it was started from, so a
# link sent anew or used up ends the logins started from it. ``finished_at`` is set
# when the provider's answer comes back (single use), ``outcome`` says how it ended.
strong_auth_logins = Table(
    "strong_auth_logins",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("contract_id", String(24), ForeignKey("contracts.id"), nullable=False),
    Column("link_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("outcome", String(32)),
    Index("ix_strong_auth_logins_contract_id_expires_at", "contract_id", "expires_at"),
    Index("ix_strong_auth_logins_expires_at", "expires_at"),
)

# Who was verified, how and when: no more than the claim names that matched, a keyed
# hash of the provider's subject, the issuer and the authentication method it reported.
strong_auth_verifications = Table(
    "strong_auth_verifications",
    metadata,
    Column("contract_id", String(24), ForeignKey("contracts.id"), primary_key=True),
    Column("organization_unit_id", String(24), nullable=False),
    Column("verified_at", UtcDateTime, nullable=False),
    Column("issuer", String(512), nullable=False),
    Column("subject_hash", String(64), nullable=False),
    Column("matched_claims", Text, nullable=False),
    Column("acr", String(128)),
    Column("amr", String(256)),
    Index("ix_strong_auth_verifications_verified_at", "verified_at"),
)


def map_tables() -> None:
    """Nothing is mapped: every write is a Core statement."""
