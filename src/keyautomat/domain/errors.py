"""Named errors of the domain and the service layer.

The API maps each kind to one status code and the one JSON error shape in a
single place (``entrypoints/api/errors.py``); nothing below the entrypoints
knows about HTTP.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a use case raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """The request is well-formed JSON but breaks a rule; names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class NotFound(DomainError):
    """The resource does not exist, or lies outside the caller's organization subtree."""

    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} not found")
        self.resource = resource


class Conflict(DomainError):
    """The request collides with the current state (duplicate id, no capacity, overlap)."""


class Forbidden(DomainError):
    """The caller is authenticated but its role does not allow the operation."""

    def __init__(self, message: str = "Forbidden") -> None:
        super().__init__(message)


class Unauthorized(DomainError):
    """The request is not signed by a known service account (see spec/auth.md §5)."""
