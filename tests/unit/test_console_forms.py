"""What the console's forms share (entrypoints/console/forms.py), without a database: a
refused field shown where the form has it, and times typed on a wall clock."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from keyautomat.domain.console import ConsoleRole
from keyautomat.domain.errors import Conflict, InvalidInput
from keyautomat.entrypoints.console.forms import FORM, form_errors, local_input, wall_clock
from keyautomat.entrypoints.console.web import Submission
from keyautomat.service_layer.console_users import ConsoleIdentity
from keyautomat.service_layer.principal import Principal

FIELDS = {"contact": "contact_name", "contact.email": "contact_email", "keyIds": "key_ids"}
HELSINKI = ZoneInfo("Europe/Helsinki")


@pytest.mark.parametrize(
    ("refused", "shown"),
    [
        pytest.param(
            InvalidInput("contact.email", "is not a valid email address"),
            {"contact_email": "contact.email: is not a valid email address"},
            id="a nested field lands on its form field, named as the API names it",
        ),
        pytest.param(
            InvalidInput("keyIds.2", "is blocked"),
            {"key_ids": "keyIds.2: is blocked"},
            id="an item of a list lands on the list's field",
        ),
        pytest.param(
            InvalidInput("contact", "is required"),
            {"contact_name": "contact: is required"},
            id="a whole object lands on its first field",
        ),
        pytest.param(
            InvalidInput("key_ids", "is required"),
            {"key_ids": "is required"},
            id="a field named as the form names it stays there",
        ),
        pytest.param(
            InvalidInput("groupId", "does not name a group you can use"),
            {FORM: "groupId: does not name a group you can use"},
            id="a field the form does not have is the form's own error",
        ),
        pytest.param(
            Conflict("No automat has 2 keys available"),
            {FORM: "No automat has 2 keys available"},
            id="a conflict is the form's own error",
        ),
    ],
)
def test_a_refusal_is_shown_where_the_form_has_the_field(
    refused: InvalidInput | Conflict, shown: dict[str, str]
) -> None:
    assert form_errors(refused, FIELDS) == shown


OPERATOR = ConsoleIdentity(
    user_id="u",
    email="op@acme.fi",
    role=ConsoleRole.OPERATOR,
    csrf_token="t",
    unit_name="Acme",
    principal=Principal("u", "unit", "/unit/", 1, ConsoleRole.OPERATOR),
)


def submission(**form: str) -> Submission:
    return Submission(OPERATOR, form, {k: [v] for k, v in form.items()})


@pytest.mark.parametrize(
    ("typed", "utc"),
    [
        pytest.param("2026-01-05T12:30", datetime(2026, 1, 5, 10, 30, tzinfo=UTC), id="winter"),
        pytest.param("2026-07-05T12:30", datetime(2026, 7, 5, 9, 30, tzinfo=UTC), id="summer"),
    ],
)
def test_a_time_is_typed_on_the_wall_clock_of_the_forms_time_zone(
    typed: str, utc: datetime
) -> None:
    assert wall_clock(submission(start=typed), "start", HELSINKI) == utc
    assert local_input(utc, "Europe/Helsinki") == typed


@pytest.mark.parametrize("typed", ["yesterday", "2026-13-01T10:00", "2026-01-05T12:30+02:00"])
def test_a_time_that_is_no_wall_clock_time_is_refused_naming_its_field(typed: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        wall_clock(submission(start=typed), "start", HELSINKI)
    assert refused.value.field == "start"


def test_an_empty_time_is_none_and_an_empty_stored_time_an_empty_field() -> None:
    assert wall_clock(submission(start=""), "start", HELSINKI) is None
    assert local_input(None, "Europe/Helsinki") == ""
