"""The contract rules (contracts/rules.py) without a database: one behaviour per test, or a
rule table whose rows read as sentences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyautomat.contracts import rules
from keyautomat.contracts.rules import OPEN_END, ContractType, KeyStatus
from keyautomat.domain import webhooks as wh
from keyautomat.domain.devices import PincodePurpose
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.text import NOT_ASCII_DIGITS

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEFAULT, FETCH, RETURN = ContractType.DEFAULT, ContractType.FETCH, ContractType.RETURN
WAITING = None
FETCHED, RETURNED = KeyStatus.FETCHED, KeyStatus.RETURNED
NOT_FETCHED, NOT_RETURNED = KeyStatus.NOT_FETCHED, KeyStatus.NOT_RETURNED


def case(sentence: str, *values: Any) -> Any:
    """A row of a rule table: pytest prints its sentence as the test id."""
    return pytest.param(*values, id=sentence)


def hours(n: float) -> datetime:
    return NOW + n * HOUR


# --- types and statuses ----------------------------------------------------------------------


def test_contract_types_are_numbered_as_on_the_wire() -> None:
    assert [int(t) for t in (DEFAULT, FETCH, RETURN)] == [1, 2, 3]


def test_webhooks_name_a_contract_type_in_lower_case() -> None:
    assert [t.wire_name for t in ContractType] == list(wh.CONTRACT_TYPES)


def test_key_statuses_are_the_states_a_key_status_webhook_reports() -> None:
    # key-delayed is about a contract whose key is still out elsewhere, not a key status.
    assert (*(s.value for s in KeyStatus), "key-delayed") == wh.KEY_STATES


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        case("periods sharing an hour overlap", (0, 2), (1, 3), True),
        case("a period inside another overlaps it", (0, 4), (1, 2), True),
        case("a period ending when the next starts does not overlap it", (0, 1), (1, 2), False),
        case("periods apart do not overlap", (0, 1), (2, 3), False),
    ],
)
def test_half_open_periods_overlap_when_they_share_an_instant(
    a: tuple[int, int], b: tuple[int, int], expected: bool
) -> None:
    assert rules.overlaps(hours(a[0]), hours(a[1]), hours(b[0]), hours(b[1])) is expected
    assert rules.overlaps(hours(b[0]), hours(b[1]), hours(a[0]), hours(a[1])) is expected


# --- reservations and pincodes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract_type", "end", "until"),
    [
        case("a default contract blocks until its end", DEFAULT, hours(5), hours(5)),
        case("a fetch contract blocks until the fetch whatever its end", FETCH, hours(5), OPEN_END),
        case("a fetch contract without an end blocks until the fetch", FETCH, None, OPEN_END),
        case("a return contract blocks until its end", RETURN, hours(5), hours(5)),
        case("a return contract without an end blocks until the return", RETURN, None, OPEN_END),
        case("a default contract without an end blocks for good", DEFAULT, None, OPEN_END),
    ],
)
def test_how_long_a_new_contract_blocks_its_key_and_locker(
    contract_type: ContractType, end: datetime | None, until: datetime
) -> None:
    assert rules.reservation_until(contract_type, end) == until


def test_the_open_end_outlives_every_contract() -> None:
    assert datetime(9000, 1, 1, tzinfo=UTC) < OPEN_END


@pytest.mark.parametrize(
    ("contract_type", "window"),
    [
        case("a default code opens from the start to the end", DEFAULT, (NOW, hours(5))),
        case("a return code opens from the start to the end", RETURN, (NOW, hours(5))),
        case("a fetch code opens from the start until the fetch spends it", FETCH, (NOW, None)),
    ],
)
def test_when_the_automat_accepts_a_contracts_code(
    contract_type: ContractType, window: tuple[datetime, datetime | None]
) -> None:
    assert rules.pincode_window(contract_type, NOW, hours(5)) == window


def test_a_code_without_an_end_opens_from_the_start_on() -> None:
    assert rules.pincode_window(DEFAULT, NOW, None) == (NOW, None)


@pytest.mark.parametrize(
    ("contract_type", "purpose"),
    [
        case("a default code lets the key out and back in", DEFAULT, PincodePurpose.DEFAULT),
        case("a fetch code lets the key out once", FETCH, PincodePurpose.FETCH),
        case("a return code lets a key in once", RETURN, PincodePurpose.RETURN),
    ],
)
def test_the_purpose_the_automat_is_told_a_code_has(
    contract_type: ContractType, purpose: PincodePurpose
) -> None:
    assert rules.pincode_purpose(contract_type) is purpose


@pytest.mark.parametrize(
    "code",
    [
        case("four digits", "1234"),
        case("ten digits", "0123456789"),
        case("leading zeros", "0000"),
    ],
)
def test_a_pincode_of_four_to_ten_ascii_digits_is_accepted(code: str) -> None:
    assert rules.check_pincode(code) is None


@pytest.mark.parametrize(
    "code",
    [
        case("a number", 1234),
        case("null", None),
        case("an empty string", ""),
        case("a letter among the digits", "12a4"),
        case("a space before the digits", " 1234"),
        case("a line break after the digits", "1234\n"),
        case("arabic-indic digits no keypad has", "\u0661\u0662\u0663\u0664"),
        case("fullwidth digits", "\uff11\uff12\uff13\uff14"),
    ],
)
def test_a_pincode_that_is_not_ascii_digits_is_refused(code: object) -> None:
    assert rules.check_pincode(code) == NOT_ASCII_DIGITS


@pytest.mark.parametrize("code", [case("three digits", "123"), case("eleven digits", "1" * 11)])
def test_a_pincode_shorter_than_four_or_longer_than_ten_digits_is_refused(code: str) -> None:
    assert rules.check_pincode(code) == "must be 4 to 10 digits long"


# --- the end of a contract -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract_type", "status", "in_history", "outcome"),
    [
        case("a default key never fetched is not fetched", DEFAULT, WAITING, False, NOT_FETCHED),
        case("a default key still out is not returned", DEFAULT, FETCHED, False, NOT_RETURNED),
        case("a default key back in place stays returned", DEFAULT, RETURNED, False, None),
        case("a default key not returned is marked once", DEFAULT, NOT_RETURNED, False, None),
        case("a default key in history is left alone", DEFAULT, WAITING, True, None),
        case("a fetch key never fetched is left alone", FETCH, WAITING, False, None),
        case("a fetch key fetched belongs to the user", FETCH, FETCHED, True, None),
        case("a return key not brought back is not returned", RETURN, WAITING, False, NOT_RETURNED),
        case("a return key brought back stays returned", RETURN, RETURNED, True, None),
        case("a return key in history is left alone", RETURN, WAITING, True, None),
    ],
)
def test_what_a_key_becomes_when_its_contracts_end_passes(
    contract_type: ContractType,
    status: KeyStatus | None,
    in_history: bool,
    outcome: KeyStatus | None,
) -> None:
    assert rules.end_outcome(contract_type, status, in_history) is outcome


@pytest.mark.parametrize(
    ("contract_type", "status", "in_history", "out"),
    [
        case("a default key fetched is out", DEFAULT, FETCHED, False, True),
        case("a default key not returned at the end is out", DEFAULT, NOT_RETURNED, False, True),
        case("a default key waiting is not out", DEFAULT, WAITING, False, False),
        case("a default key returned is not out", DEFAULT, RETURNED, False, False),
        case("a default key never fetched is not out", DEFAULT, NOT_FETCHED, True, False),
        case("a return key not brought back yet is out", RETURN, WAITING, False, True),
        case("a return key not returned at the end is out", RETURN, NOT_RETURNED, False, True),
        case("a return key brought back is not out", RETURN, RETURNED, True, False),
        case("a return key retired unreturned is not out", RETURN, WAITING, True, False),
        case("a fetch key fetched belongs to the user", FETCH, FETCHED, True, False),
        case("a fetch key waiting is not out", FETCH, WAITING, False, False),
    ],
)
def test_which_keys_are_with_the_user_and_due_back(
    contract_type: ContractType, status: KeyStatus | None, in_history: bool, out: bool
) -> None:
    assert rules.is_out(contract_type, status, in_history) is out


@pytest.mark.parametrize(
    ("in_automat", "free_locker_after_fetch", "keeps"),
    [
        case("an automat key keeps its locker and code", True, False, True),
        case("a key whose locker was freed at the fetch keeps nothing", True, True, False),
        case("a manual-storage key has no locker to keep", False, False, False),
    ],
)
def test_what_a_key_still_out_at_the_end_keeps_for_its_return(
    in_automat: bool, free_locker_after_fetch: bool, keeps: bool
) -> None:
    assert rules.keeps_locker_while_out(in_automat, free_locker_after_fetch) is keeps


# --- deleting and changing a contract --------------------------------------------------------

KEY_OUT = "a key of this contract has been fetched and not returned"
HALF_FETCHED = "some keys have been fetched while others are still waiting"
HALF_RETURNED = "some keys have been returned while others are still waiting"


@pytest.mark.parametrize(
    ("contract_type", "statuses", "refusal"),
    [
        case("a default contract with a key out is kept", DEFAULT, [WAITING, FETCHED], KEY_OUT),
        case("a default contract with a key overdue is kept", DEFAULT, [NOT_RETURNED], KEY_OUT),
        case("a default contract not begun may go", DEFAULT, [WAITING, WAITING], None),
        case("a default contract with every key back may go", DEFAULT, [RETURNED], None),
        case("a default contract never fetched may go", DEFAULT, [NOT_FETCHED], None),
        case("a fetch contract half fetched is kept", FETCH, [FETCHED, WAITING], HALF_FETCHED),
        case("a fetch contract fully fetched may go", FETCH, [FETCHED, FETCHED], None),
        case("a fetch contract not begun may go", FETCH, [WAITING], None),
        case("a return contract half returned is kept", RETURN, [RETURNED, WAITING], HALF_RETURNED),
        case("a return contract fully returned may go", RETURN, [RETURNED, RETURNED], None),
        case("a return contract not begun may go", RETURN, [WAITING, WAITING], None),
        case("a contract without keys may go", FETCH, [], None),
    ],
)
def test_why_a_contract_may_not_be_deleted_now(
    contract_type: ContractType, statuses: list[KeyStatus | None], refusal: str | None
) -> None:
    assert rules.delete_refusal(contract_type, statuses) == refusal


def test_a_new_contract_may_have_no_end() -> None:
    rules.check_new_period(NOW, None, NOW)


def test_a_new_contracts_end_after_its_start_and_ahead_is_accepted() -> None:
    rules.check_new_period(hours(-1), hours(1), NOW)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        case("an end at the start", hours(1), hours(1), "end: must be after start"),
        case("an end before the start", hours(2), hours(1), "end: must be after start"),
        case("an end already past", hours(-2), hours(-1), "end: must be in the future"),
        case("an end right now", hours(-2), NOW, "end: must be in the future"),
    ],
)
def test_a_new_contracts_period_is_refused_naming_the_end(
    start: datetime, end: datetime, message: str
) -> None:
    with pytest.raises(InvalidInput, match=f"^{message}$"):
        rules.check_new_period(start, end, NOW)


def changed(*, start: datetime = NOW, end: datetime | None = None, progressed: bool) -> None:
    """A PATCH of a contract running from NOW to 5 hours later, at 1 hour in."""
    rules.check_changed_period(
        old_start=NOW,
        old_end=hours(5),
        start=start,
        end=end,
        progressed=progressed,
        now=hours(1),
    )


def test_the_start_may_move_before_any_key_has_moved() -> None:
    changed(start=hours(-1), end=hours(5), progressed=False)


def test_the_start_is_fixed_once_a_key_has_moved() -> None:
    with pytest.raises(InvalidInput, match=r"^start: cannot change once a key"):
        changed(start=hours(-1), end=hours(5), progressed=True)


def test_the_same_start_may_be_sent_again_after_progress() -> None:
    changed(start=NOW, end=hours(6), progressed=True)


def test_a_changed_end_must_lie_ahead() -> None:
    with pytest.raises(InvalidInput, match=r"^end: must be in the future$"):
        changed(end=hours(0.5), progressed=False)


def test_an_unchanged_end_already_past_is_no_refusal() -> None:
    rules.check_changed_period(
        old_start=hours(-5),
        old_end=hours(-1),
        start=hours(-5),
        end=hours(-1),
        progressed=True,
        now=NOW,
    )


def test_a_changed_end_must_stay_after_the_start() -> None:
    with pytest.raises(InvalidInput, match=r"^end: must be after start$"):
        changed(start=hours(3), end=hours(2), progressed=False)


def test_the_end_may_be_removed() -> None:
    changed(end=None, progressed=True)


# --- fetches and returns ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract_type", "completes"),
    [
        case("a fetch contract is done with a fetched key", FETCH, True),
        case("a default contract waits for the key to come back", DEFAULT, False),
        case("a return contract hands out nothing to complete", RETURN, False),
    ],
)
def test_whether_a_fetch_completes_a_contracts_key(
    contract_type: ContractType, completes: bool
) -> None:
    assert rules.fetch_completes(contract_type) is completes


@pytest.mark.parametrize(
    ("contract_type", "free_locker_after_fetch", "frees"),
    [
        case("a fetch contract frees the locker", FETCH, False, True),
        case("a default contract asking for it frees the locker", DEFAULT, True, True),
        case("a default contract keeps the locker for the return", DEFAULT, False, False),
    ],
)
def test_whether_a_fetch_frees_the_locker(
    contract_type: ContractType, free_locker_after_fetch: bool, frees: bool
) -> None:
    assert rules.fetch_frees_locker(contract_type, free_locker_after_fetch) is frees


@pytest.mark.parametrize(
    ("contract_type", "status", "opened", "fetch"),
    [
        case("a waiting default key its code released", DEFAULT, WAITING, True, True),
        case("a returned default key its code released again", DEFAULT, RETURNED, True, True),
        case("a waiting fetch key its code released", FETCH, WAITING, True, True),
        case("not a key taken without its code", DEFAULT, WAITING, False, False),
        case("not a key already out", DEFAULT, FETCHED, True, False),
        case("not a key overdue", DEFAULT, NOT_RETURNED, True, False),
        case("not a return contracts key", RETURN, WAITING, True, False),
    ],
)
def test_taking_a_key_out_of_its_locker_is_a_fetch_of(
    contract_type: ContractType, status: KeyStatus | None, opened: bool, fetch: bool
) -> None:
    assert rules.fetchable(contract_type, status, opened) is fetch


@pytest.mark.parametrize(
    ("contract_type", "status", "awaited"),
    [
        case("a default key out", DEFAULT, FETCHED, True),
        case("a default key overdue", DEFAULT, NOT_RETURNED, True),
        case("a return key not brought yet", RETURN, WAITING, True),
        case("a return key overdue", RETURN, NOT_RETURNED, True),
        case("not a default key never fetched", DEFAULT, WAITING, False),
        case("not a default key already back", DEFAULT, RETURNED, False),
        case("not a return key already back", RETURN, RETURNED, False),
        case("not a fetch key, which belongs to the user", FETCH, FETCHED, False),
    ],
)
def test_putting_a_key_into_its_locker_is_the_return_of(
    contract_type: ContractType, status: KeyStatus | None, awaited: bool
) -> None:
    assert rules.awaiting_return(contract_type, status) is awaited


@pytest.mark.parametrize(
    ("contract_type", "status", "end_evaluated", "locker_freed", "ends"),
    [
        case("a return contracts key", RETURN, WAITING, False, False, True),
        case("a key back late", DEFAULT, NOT_RETURNED, True, False, True),
        case("a key back after the end was evaluated", DEFAULT, FETCHED, True, False, True),
        case("a key whose locker was freed at the fetch", DEFAULT, FETCHED, False, True, True),
        case("not a default key back in time", DEFAULT, FETCHED, False, False, False),
    ],
)
def test_a_return_ends_the_contracts_custody_of(
    contract_type: ContractType,
    status: KeyStatus | None,
    end_evaluated: bool,
    locker_freed: bool,
    ends: bool,
) -> None:
    done = rules.return_ends_custody(
        contract_type, status, end_evaluated=end_evaluated, locker_freed=locker_freed
    )
    assert done is ends


@pytest.mark.parametrize(
    ("contract_type", "name"),
    [
        case("a return code is reported as a return code", RETURN, "return"),
        case("a default code is reported as a default code", DEFAULT, "default"),
        case("a fetch code is reported as a default code", FETCH, "default"),
    ],
)
def test_the_code_type_a_code_entered_webhook_reports(
    contract_type: ContractType, name: str
) -> None:
    assert rules.code_type_name(contract_type) == name


@pytest.mark.parametrize(
    ("start", "end", "completed_at", "state"),
    [
        case("a contract that starts later is future", hours(1), hours(5), None, "future"),
        case("one that started and has not ended is ongoing", hours(-1), hours(5), None, "ongoing"),
        case("one without an end goes on", hours(-1), None, None, "ongoing"),
        case("one whose end passed has ended", hours(-5), hours(-1), None, "ended"),
        case("the end is exclusive", hours(-5), NOW, None, "ended"),
        case("one done with every key has ended early", hours(-1), hours(5), hours(-0.5), "ended"),
    ],
)
def test_a_contract_is_future_ongoing_or_ended_as_the_list_filters_say(
    start: datetime, end: datetime | None, completed_at: datetime | None, state: str
) -> None:
    assert rules.period_state(start, end, completed_at, NOW) == state
