"""Rules of key contracts that need no I/O: types, key statuses, periods and what they
block, pincode windows, what a fetch and a return do, the end-of-contract outcome
and the delete restrictions.

Shared by every contract kind (a mechanical contract is a default contract whose
keys may sit in manual storage and whose locker may be freed at the fetch); see
docs/contracts.md and spec/gaps.md C7-C16, F1-F11. Unit tests:
tests/unit/contracts/test_rules.py.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, datetime

from keyautomat.domain.devices import MAX_LOCKERS, PincodePurpose
from keyautomat.domain.errors import InvalidInput
from keyautomat.domain.text import NOT_ASCII_DIGITS, is_ascii_digits

# "No end" in reservation rows: far enough to outlive every contract, and a real
# value so that an overlap test is one index range (see orm_contracts.py).
OPEN_END = datetime(9999, 1, 1, tzinfo=UTC)

# Keys of one contract: numberOfKeys, keyIds and mechanical keys (docs/api.md).
MAX_KEYS_PER_CONTRACT = MAX_LOCKERS

MIN_PINCODE_LENGTH = 4
MAX_PINCODE_LENGTH = 10


class ContractType(enum.IntEnum):
    DEFAULT = 1
    FETCH = 2
    RETURN = 3

    @property
    def wire_name(self) -> str:
        """The text used by webhooks (``contract-update.contractType``)."""
        return self.name.lower()


class KeyStatus(enum.StrEnum):
    """A key's status within one contract (gaps.md C11); None means waiting."""

    FETCHED = "key-fetched"
    RETURNED = "key-returned"
    NOT_FETCHED = "key-not-fetched"
    NOT_RETURNED = "key-not-returned"
    # Ours (docs/contracts.md, "Lost keys"): reported lost by staff; out of the contract.
    LOST = "key-lost"


def period_state(
    start: datetime, end: datetime | None, completed_at: datetime | None, now: datetime
) -> str:
    """``ended``, ``future`` or ``ongoing``: the list filters of gaps.md C14 for one contract
    (``store.period_condition`` is the same rule in SQL). A contract done with every key
    has ended before its end."""
    if completed_at is not None or (end is not None and end <= now):
        return "ended"
    if start > now:
        return "future"
    return "ongoing"


def overlaps(a_start: datetime, a_until: datetime, b_start: datetime, b_until: datetime) -> bool:
    """Half-open periods ``[start, until)`` share an instant."""
    return a_start < b_until and b_start < a_until


def reservation_until(contract_type: ContractType, end: datetime | None) -> datetime:
    """How long a new contract blocks its key and locker (gaps.md C7).

    Default: until ``end`` (and, if the key is still out then, until it is back:
    the end evaluation reopens the reservation). Fetch: until the key is
    fetched, which is not known yet, so open. Return: until returned or ``end``.
    """
    if contract_type is ContractType.FETCH or end is None:
        return OPEN_END
    return end


def pincode_window(
    contract_type: ContractType, start: datetime, end: datetime | None
) -> tuple[datetime, datetime | None]:
    """When the automat accepts the code (gaps.md C8); a fetch code is spent by the fetch."""
    if contract_type is ContractType.FETCH:
        return start, None
    return start, end


def pincode_purpose(contract_type: ContractType) -> PincodePurpose:
    return {
        ContractType.DEFAULT: PincodePurpose.DEFAULT,
        ContractType.FETCH: PincodePurpose.FETCH,
        ContractType.RETURN: PincodePurpose.RETURN,
    }[contract_type]


def check_pincode(code: object) -> str | None:
    """The reason a pincode is refused, or None (gaps.md C8).

    The digits must be ASCII: ``١٢٣٤`` cannot be typed on a keypad and would
    escape the uniqueness check against ``1234``.
    """
    if not isinstance(code, str) or not is_ascii_digits(code):
        return NOT_ASCII_DIGITS
    if not MIN_PINCODE_LENGTH <= len(code) <= MAX_PINCODE_LENGTH:
        return f"must be {MIN_PINCODE_LENGTH} to {MAX_PINCODE_LENGTH} digits long"
    return None


def end_outcome(
    contract_type: ContractType, status: str | None, in_history: bool
) -> KeyStatus | None:
    """What a key becomes when its contract's end passes (gaps.md C12), or None.

    Keys never fetched become ``key-not-fetched``; keys fetched and still out,
    and keys of a return contract not brought back, ``key-not-returned``. Fetch
    contracts have no end and never get either.
    """
    if in_history or contract_type is ContractType.FETCH:
        return None
    if contract_type is ContractType.RETURN:
        return KeyStatus.NOT_RETURNED if status is None else None
    if status is None:
        return KeyStatus.NOT_FETCHED
    if status == KeyStatus.FETCHED:
        return KeyStatus.NOT_RETURNED
    return None


def is_out(contract_type: ContractType, status: str | None, in_history: bool) -> bool:
    """The key is with the user and due back (what end reminders and the
    keys-not-returned notice are about)."""
    if contract_type is ContractType.RETURN:
        return not in_history and status in (None, KeyStatus.NOT_RETURNED)
    if contract_type is ContractType.DEFAULT:
        return status in (KeyStatus.FETCHED, KeyStatus.NOT_RETURNED)
    return False


def delete_refusal(contract_type: ContractType, statuses: Iterable[str | None]) -> str | None:
    """Why a contract may not be deleted now (endpoints.md §3.6), or None."""
    values = list(statuses)
    if contract_type is ContractType.DEFAULT:
        if any(s in (KeyStatus.FETCHED, KeyStatus.NOT_RETURNED) for s in values):
            return "a key of this contract has been fetched and not returned"
        return None
    done = KeyStatus.FETCHED if contract_type is ContractType.FETCH else KeyStatus.RETURNED
    finished = [s == done for s in values]
    waiting = [s is None for s in values]
    if any(finished) and any(waiting):
        verb = "fetched" if contract_type is ContractType.FETCH else "returned"
        return f"some keys have been {verb} while others are still waiting"
    return None


def check_new_period(start: datetime, end: datetime | None, now: datetime) -> None:
    """A new contract's period: an end after the start and still ahead."""
    if end is None:
        return
    if end <= start:
        raise InvalidInput("end", "must be after start")
    if end <= now:
        raise InvalidInput("end", "must be in the future")


def check_changed_period(
    *,
    old_start: datetime,
    old_end: datetime | None,
    start: datetime,
    end: datetime | None,
    progressed: bool,
    now: datetime,
) -> None:
    """A PATCH of the period (endpoints.md §3.5, §9.5): the start is fixed once a key has
    moved; a changed end must lie ahead; the end stays after the start."""
    if start != old_start and progressed:
        raise InvalidInput("start", "cannot change once a key has been fetched or returned")
    if end is not None and end != old_end and end <= now:
        raise InvalidInput("end", "must be in the future")
    if end is not None and end <= start:
        raise InvalidInput("end", "must be after start")


def fetch_completes(contract_type: ContractType) -> bool:
    """A fetch contract is done with a key once it is fetched: the key is the user's."""
    return contract_type is ContractType.FETCH


def fetch_frees_locker(contract_type: ContractType, free_locker_after_fetch: bool) -> bool:
    """The locker stops waiting for the key at the fetch: fetch contracts, and contracts
    that ask for it (``freeLockerAfterFetch``, gaps.md F10)."""
    return fetch_completes(contract_type) or free_locker_after_fetch


def fetchable(contract_type: ContractType, status: str | None, opened: bool) -> bool:
    """Taking the key out of its locker is the fetch: only a key released by its contract's
    code since it was last put back (a service opening is no handover), and waiting."""
    return (
        contract_type is not ContractType.RETURN and opened and status in (None, KeyStatus.RETURNED)
    )


def awaiting_return(contract_type: ContractType, status: str | None) -> bool:
    """A key whose insertion into its locker is this contract's return."""
    if contract_type is ContractType.RETURN:
        return status in (None, KeyStatus.NOT_RETURNED)
    if contract_type is ContractType.DEFAULT:
        return status in (KeyStatus.FETCHED, KeyStatus.NOT_RETURNED)
    return False


def return_ends_custody(
    contract_type: ContractType,
    status: str | None,
    *,
    end_evaluated: bool,
    locker_freed: bool,
) -> bool:
    """The contract is done with a key that just came back: a return contract's key, a key
    back late or after the end, and a key whose locker was freed at the fetch."""
    return (
        contract_type is ContractType.RETURN
        or status == KeyStatus.NOT_RETURNED
        or end_evaluated
        or locker_freed
    )


def keeps_locker_while_out(in_automat: bool, free_locker_after_fetch: bool) -> bool:
    """A key still out at the end keeps its locker and its code for the return (C12)."""
    return in_automat and not free_locker_after_fetch


def code_type_name(contract_type: ContractType) -> str:
    """The pincode purpose a code-entered webhook reports (webhooks.md §5.3)."""
    return "return" if contract_type is ContractType.RETURN else "default"
