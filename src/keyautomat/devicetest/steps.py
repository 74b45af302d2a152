"""The steps of the conformance kit, in the order they run (docs/device-test.md).

Each step drives the device through the real server, judges it by what it reported
on the broker, and returns a one-line account of what it saw, or raises StepFailed
saying what it saw instead. Steps open one locker again and again (the first that
held a key), choosing a fetch or a return code by what the device reported last, so
any of them can run alone after ``binding`` and ``locker-inventory``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from keyautomat.adapters.device_protocol import (
    DEVICE_EVENTS,
    PROTOCOL_VERSION,
    Ack,
    CodeEntered,
    Hello,
    LockerInventory,
    Rejected,
    RejectReason,
    RemoteCode,
    Sync,
    Welcome,
    down_topic,
    new_message_id,
)
from keyautomat.devicetest.kit import (
    Kit,
    StepFailed,
    StepSkipped,
    code_entered,
    cycle,
    hand_action,
    prompt_ended,
)
from keyautomat.devicetest.server import KitCode
from keyautomat.devicetest.traffic import Seen
from keyautomat.domain.devices import PincodePurpose
from keyautomat.domain.model import LifecycleState
from keyautomat.domain.times import format_utc

StepRun = Callable[[Kit], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    expected: str  # what the protocol asks of the device, printed when it fails
    run: StepRun
    needs: tuple[str, ...] = ()


# --- binding and the first messages -----------------------------------------------------


async def binding(kit: Kit) -> str:
    server, traffic = kit.server, kit.traffic
    code = server.installation_code

    def is_our_hello(seen: Seen) -> bool:
        body = seen.body
        return isinstance(body, Hello) and body.installation_pincode == code

    hello = await traffic.wait_for(
        None, "up", is_our_hello, timeout=kit.options.bind_timeout, since=0
    )
    if hello is None:
        heard = sorted({s.hw_id for s in traffic.seen if s.direction == "up"})
        bad = [s for s in traffic.seen if s.direction == "up" and s.problem is not None]
        hint = f"; heard only {', '.join(heard)}" if heard else "; heard no device at all"
        if bad:
            hint += f"; {bad[0].hw_id} sent a malformed message: {bad[0].problem}"
        raise StepFailed(
            f"no hello with the installation code {code} on "
            f"{server.settings.mqtt_topic_prefix}/devices/+/up within "
            f"{kit.options.bind_timeout:g} s{hint}"
        )
    kit.hw_id = hello.hw_id
    data = hello.data()
    assert isinstance(data, Hello)
    if data.product != kit.options.product:
        raise StepFailed(
            f"{kit.hw_id} is a {data.product}, but the kit installed a {kit.options.product}: "
            f"run the kit with --product {data.product}"
        )
    hello_id = hello.id
    answer = await traffic.wait_for(
        kit.hw_id,
        "down",
        lambda s: s.type == "welcome" or (s.type == "rejected" and s.data().ref == hello_id),
        timeout=kit.timeout,
        since=hello.seq,
    )
    if answer is None:
        raise StepFailed(f"the server did not answer the hello of {kit.hw_id}")
    if answer.type == "rejected":
        raise StepFailed(f"the server refused the hello: {answer.data().reason}")
    welcome = answer.data()
    assert isinstance(welcome, Welcome)
    if welcome.device_token is None:
        raise StepFailed("the welcome carried no device token")
    kit.token = welcome.device_token
    kit.welcome_seq = answer.seq
    kit.locker_count = data.locker_count
    kit.heartbeat_seconds = welcome.heartbeat_seconds
    following = await traffic.wait_for(
        kit.hw_id,
        "up",
        lambda s: s.message is not None,
        timeout=kit.timeout + 2 * kit.heartbeat_seconds,
        since=answer.seq,
    )
    if following is None:
        raise StepFailed("the device sent nothing after its welcome")
    assert following.message is not None
    if following.message.token != kit.token:
        raise StepFailed(
            f"the device's first message after welcome ({following.type}) did not carry "
            "the device token it received: every message after binding must"
        )
    state, bound = await server.lifecycle()
    if state != LifecycleState.ACTIVE or bound != kit.hw_id:
        raise StepFailed(f"the server has the automat {state}, bound to {bound}")
    firmware = f", firmware {data.firmware}" if data.firmware else ""
    return (
        f"{kit.hw_id} said hello with the installation code ({data.product}, "
        f"{data.locker_count} lockers{firmware}), got a welcome with a device token, and "
        f"its next message ({following.type}) carried the token"
    )


async def locker_inventory(kit: Kit) -> str:
    inventory = await kit.traffic.wait_for(
        kit.hw_id,
        "up",
        lambda s: s.type == "locker-inventory",
        timeout=kit.timeout,
        since=kit.welcome_seq,
    )
    if inventory is None:
        raise StepFailed("no locker-inventory after the welcome" + kit.meanwhile(kit.welcome_seq))
    data = inventory.data()
    assert isinstance(data, LockerInventory)
    indices = [state.locker_index for state in data.lockers]
    wanted = set(range(kit.locker_count))
    missing = sorted(wanted - set(indices))
    extra = sorted(set(indices) - wanted)
    twice = sorted({i for i in indices if indices.count(i) > 1})
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if extra:
        problems.append(f"not lockers of a {kit.locker_count}-locker device: {_few(extra)}")
    if twice:
        problems.append(f"listed twice: {_few(twice)}")
    if problems:
        raise StepFailed(
            f"the inventory lists {len(indices)} lockers; it must list 0..{kit.locker_count - 1} "
            f"(0-based, as lockerCount {kit.locker_count} in hello), each once: "
            + "; ".join(problems)
        )
    assert inventory.message is not None
    inventory_id = inventory.message.id
    refusal = await kit.traffic.wait_for(
        kit.hw_id,
        "down",
        lambda s: s.type in ("ack", "rejected") and s.data().ref == inventory_id,
        timeout=kit.timeout,
        since=inventory.seq,
    )
    if refusal is not None and refusal.type == "rejected":
        raise StepFailed(f"the server refused the inventory: {refusal.data().reason}")
    kit.inventory_seq = inventory.seq
    kit.stocked = [state.locker_index for state in data.lockers if state.key_inside]
    return (
        f"{len(indices)} lockers, 0..{kit.locker_count - 1} each once; "
        f"{len(kit.stocked)} hold a key"
    )


def _few(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:8])
    return shown + (f" and {len(values) - 8} more" if len(values) > 8 else "")


async def heartbeat(kit: Kit) -> str:
    interval = kit.heartbeat_seconds
    grace = max(2.0, interval / 2)
    beats: list[Seen] = []
    position = kit.welcome_seq
    for _ in range(3):
        beat = await kit.traffic.wait_for(
            kit.hw_id,
            "up",
            lambda s: s.type == "heartbeat",
            timeout=interval + grace + kit.timeout,
            since=position,
        )
        if beat is None:
            raise StepFailed(
                f"{len(beats)} heartbeats since the welcome, then none for "
                f"{interval + grace + kit.timeout:g} s (welcome asked for one every {interval:g} s)"
            )
        beats.append(beat)
        position = beat.seq + 1
    welcome_at = kit.traffic.seen[kit.welcome_seq].at
    times = [welcome_at, *(beat.at for beat in beats)]
    gaps = [after - before for before, after in itertools.pairwise(times)]
    if max(gaps) > interval + grace:
        shown = ", ".join(f"{gap:.1f}" for gap in gaps)
        raise StepFailed(
            f"heartbeats came {shown} s apart; the welcome asked for one every {interval:g} s"
        )
    return (
        f"3 heartbeats, at most {max(gaps):.2f} s apart (the welcome asked for one every "
        f"{interval:g} s)"
    )


async def clock(kit: Kit) -> str:
    live = [
        seen
        for seen in kit.traffic.select(kit.hw_id, since=kit.welcome_seq)
        if seen.message is not None and seen.type in ("heartbeat", "ack", "hello")
    ]
    if not live:
        raise StepFailed("no heartbeat or ack to read the device's clock from")
    skews = []
    for seen in live:
        assert seen.message is not None
        skews.append((seen.message.occurred_at - seen.received).total_seconds())
    worst = max(skews, key=abs)
    if abs(worst) > kit.options.max_skew_seconds:
        raise StepFailed(
            f"the device's clock is {worst:+.1f} s off the server's (allowed: "
            f"{kit.options.max_skew_seconds:g} s); set it from the welcome's serverTime or NTP"
        )
    return f"the device's clock is within {abs(worst):.2f} s of the server's ({len(live)} messages)"


# --- sync and the keypad ----------------------------------------------------------------


async def sync(kit: Kit) -> str:
    full = await kit.traffic.wait_for(
        kit.hw_id, "down", lambda s: s.type == "sync", timeout=kit.timeout, since=kit.welcome_seq
    )
    if full is None:
        raise StepFailed("the server sent no sync after the welcome")
    ack = await kit.acked(full)
    if ack is None:
        raise StepFailed(
            "the device did not acknowledge the full sync that followed its welcome"
            + kit.meanwhile(full.seq)
        )
    if not ack.data().ok:
        raise StepFailed(f"the device answered the full sync ok:false ({ack.data().reason})")
    locker = kit.opening_locker()
    since = kit.traffic.mark()
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await kit.code_that_opens(locker)
    duration = loop.time() - started
    carrying = kit.traffic.select(
        kit.hw_id,
        "down",
        since=since,
        match=lambda s: s.type == "sync" and any(p.id == code.id for p in s.data().pincodes),
    )
    kit.codes["fetch"] = code
    sync_data = carrying[0].data() if carrying else None
    kind = "incremental" if isinstance(sync_data, Sync) and not sync_data.full else "full"
    return (
        f"acknowledged the full sync after its welcome, and an {kind} sync (version "
        f"{code.version}, a code for locker {locker}) {duration:.2f} s after the code was added"
    )


async def fetch_at_keypad(kit: Kit) -> str:
    locker = kit.opening_locker()
    code = kit.codes.get("fetch")
    if code is None or not kit.holds_key(locker):
        code = await kit.code_that_opens(locker)
    if code.purpose != PincodePurpose.FETCH:
        raise StepFailed(f"locker {locker} holds no key to fetch (the device reported it empty)")
    since = kit.traffic.mark()
    await kit.operator.press(f"{code.code}#", then=hand_action(code))
    events = await kit.expect(since, cycle(code, "keypad"))
    kit.check_code_entered(events[0], code, "keypad")
    kit.check_in_time_order(events)
    kit.codes["fetched"] = code
    return f"code-entered, locker-opened, key-removed, locker-closed of locker {locker}, in order"


async def return_at_keypad(kit: Kit) -> str:
    locker = kit.opening_locker()
    if kit.holds_key(locker):
        raise StepFailed(f"locker {locker} still holds a key: the fetch before did not take it")
    code = await kit.code_that_opens(locker)
    since = kit.traffic.mark()
    await kit.operator.press(f"{code.code}#", then=hand_action(code))
    events = await kit.expect(since, cycle(code, "keypad"))
    kit.check_code_entered(events[0], code, "keypad")
    kit.check_in_time_order(events)
    kit.codes["returned"] = code
    return (
        f"code-entered (right-return-code), locker-opened, key-inserted, locker-closed of "
        f"locker {locker}, in order"
    )


async def codes_that_must_not_open(kit: Kit) -> str:
    locker = kit.opening_locker()
    server = kit.server
    spent = kit.codes["fetched"]
    removed = await server.add_code(locker, PincodePurpose.FETCH)
    await kit.synced(removed.version)
    await kit.synced(await server.remove_code(removed))
    early = await server.add_code(locker, PincodePurpose.FETCH, starts_in=timedelta(days=1))
    await kit.synced(early.version)
    trials = [
        (spent, "a fetch code whose key was already taken (spent)"),
        (removed, "a code the server removed"),
        (early, "a code valid only from tomorrow"),
    ]
    for code, what in trials:
        since = kit.traffic.mark()
        done = await kit.operator.press_expecting_shut(f"{code.code}#", what)
        reported = await kit.quiet(since, _honoured(code.code))
        if done.opened or reported:
            seen = ", ".join(sorted({s.type or "" for s in reported})) or "a door opening"
            raise StepFailed(f"{what} ({code.code}) was honoured: {seen}")
    await kit.retire(spent, early, *([kit.codes["returned"]] if "returned" in kit.codes else []))
    return "a spent fetch code, a removed code and a code not yet valid opened nothing"


def _honoured(code: str) -> Callable[[Seen], bool]:
    """The device's messages that show it honoured ``code``: its code-entered, or any
    locker opening."""

    def match(seen: Seen) -> bool:
        body = seen.body
        return seen.type == "locker-opened" or (isinstance(body, CodeEntered) and body.code == code)

    return match


async def remote_code(kit: Kit) -> str:
    locker = kit.opening_locker()
    code = await kit.code_that_opens(locker)
    await kit.operator.act(
        f"Locker {locker} opens by itself in a moment (a remote code): {hand_action(code)}."
    )
    since = kit.traffic.mark()
    result = await kit.server.send_pincode(code.code, proximity=False)
    if not result.success:
        raise StepFailed(
            f"sendPincode answered {result.reason}: the device must ack remote-code within "
            f"{kit.server.settings.device_ack_timeout_seconds:g} s" + kit.meanwhile(since)
        )
    events = await kit.expect(since, cycle(code, "remote"))
    kit.check_code_entered(events[0], code, "remote")
    kit.check_in_time_order(events)
    await kit.retire(code)
    return (
        f"acked remote-code, then code-entered (source remote), locker-opened, "
        f"{events[2].type}, locker-closed of locker {locker}"
    )


async def proximity_prompt(kit: Kit) -> str:
    locker = kit.opening_locker()
    code = await kit.code_that_opens(locker)
    server = kit.server
    await kit.operator.act(
        "A prompt appears at the keypad in a moment: do NOT press # yet (the server cancels it)."
    )
    result = await server.send_pincode(code.code, proximity=True)
    if not result.success:
        raise StepFailed(f"sendPincode with proximityCheck answered {result.reason}")
    # While the prompt waits, another command is answered busy.
    ack = await server.command(kit.hw_id, "remote-code", RemoteCode(code=server.new_code()))
    if ack is None:
        raise StepFailed("no ack to a remote-code sent while a proximity prompt was pending")
    if ack.ok or ack.reason != "busy":
        raise StepFailed(
            f"a remote-code sent while a proximity prompt was pending was answered ok:{ack.ok} "
            f"reason:{ack.reason}; it must be ok:false reason:busy"
        )
    since = kit.traffic.mark()
    await server.cancel_pincode(code.code)
    cancel = await kit.traffic.wait_for(
        kit.hw_id, "down", lambda s: s.type == "cancel-prompt", timeout=kit.timeout, since=since
    )
    if cancel is None:
        raise StepFailed("the server sent no cancel-prompt (kit error)")
    if await kit.acked(cancel) is None:
        raise StepFailed("the device did not ack cancel-prompt")
    await kit.expect(since, [prompt_ended(code.code, "cancelled")])
    opened = kit.traffic.select(
        kit.hw_id, since=since, match=lambda s: s.type in ("locker-opened", "code-entered")
    )
    if opened:
        raise StepFailed(f"the cancelled prompt still led to {opened[0].type}")
    # Again, confirmed by # this time.
    result = await server.send_pincode(code.code, proximity=True)
    if not result.success:
        raise StepFailed(f"the second sendPincode with proximityCheck answered {result.reason}")
    since = kit.traffic.mark()
    await kit.operator.press("#", then=hand_action(code))
    await kit.expect(since, [prompt_ended(code.code, "confirmed")])
    events = await kit.expect(since, cycle(code, "remote"))
    kit.check_code_entered(events[0], code, "remote")
    await kit.retire(code)
    return (
        "acked the prompt, answered another command busy, ended it cancelled on cancel-prompt, "
        f"and on # reported prompt-ended confirmed and opened locker {locker}"
    )


# --- offline ----------------------------------------------------------------------------


async def offline_replay(kit: Kit) -> str:
    server, operator = kit.server, kit.operator
    locker = kit.opening_locker()
    first = await kit.code_that_opens(locker)
    if first.purpose == PincodePurpose.FETCH:
        key_id = kit.lockers()[locker].key_id
        second = await server.add_code(locker, PincodePurpose.RETURN, key_id=key_id)
    else:
        second = await server.add_code(locker, PincodePurpose.FETCH)
    await kit.synced(second.version)
    held = _program_first_locker(kit, avoid=locker)
    program_first = None
    if held is not None:
        program_first = await server.add_code(held, PincodePurpose.FETCH, program_first=True)
        server.program(program_first, seconds=0.0, opens=False)
        await kit.synced(program_first.version)
    await operator.go_offline()
    offline_from = kit.traffic.mark()
    await operator.press(f"{first.code}#", then=hand_action(first), wait=True)
    await operator.press(f"{second.code}#", then=hand_action(second), wait=True)
    if program_first is not None:
        done = await operator.press_expecting_shut(
            f"{program_first.code}#", "a program-first code typed while offline"
        )
        if done.opened:
            raise StepFailed(
                f"locker {held} opened for a program-first code while the device was offline: "
                "such a code opens only on the server's open-locker"
            )
    await operator.go_online()
    hello = await kit.traffic.wait_for(
        kit.hw_id,
        "up",
        lambda s: s.type == "hello",
        timeout=kit.timeout + 3 * kit.heartbeat_seconds,
        since=offline_from,
    )
    if hello is None:
        raise StepFailed("the device did not reconnect (no hello)" + kit.meanwhile(offline_from))
    assert hello.message is not None
    if hello.message.token != kit.token:
        raise StepFailed("the device reconnected without its device token in hello")
    expected = [*cycle(first, "keypad"), *cycle(second, "keypad")]
    if program_first is not None:
        expected.append(code_entered(program_first, "keypad"))
    events = await kit.expect(offline_from, expected)
    await _check_replay(kit, events, hello)
    if program_first is not None:
        opened = await kit.quiet(
            hello.seq,
            lambda s: s.type == "locker-opened" and s.data().locker_index == held,
        )
        if opened:
            raise StepFailed(
                f"locker {held} opened after the reconnection although the server never sent "
                "open-locker for its program-first code"
            )
    await kit.retire(first, second, *([program_first] if program_first else []))
    assert events[0].message is not None
    waited = (events[-1].received - events[0].message.occurred_at).total_seconds()
    return (
        f"{len(events)} events made offline arrived after the reconnection, in order, with "
        f"their device times (the oldest {waited:.1f} s old), each applied once"
    )


async def _check_replay(kit: Kit, events: list[Seen], hello: Seen) -> None:
    """Events made offline came after the reconnecting ``hello``, in order, with the times
    they happened, each under one id, and the server applied each with its time."""
    assert hello.message is not None
    early = [seen for seen in events if seen.seq < hello.seq]
    if early:
        raise StepFailed(
            f"{early[0].type} arrived before the device reconnected: was it offline? "
            "Events made offline are queued and sent after the next hello"
        )
    kit.check_in_time_order(events)
    reconnected = hello.message.occurred_at
    late = [seen for seen in events if seen.message and seen.message.occurred_at > reconnected]
    if late:
        raise StepFailed(
            f"{late[0].type} carries a time after the reconnection: occurredAt must be when it "
            "happened, not when it was sent"
        )
    first_entered = events[0].body
    assert isinstance(first_entered, CodeEntered)
    code_entered_code = first_entered.code
    duplicates = kit.traffic.select(
        kit.hw_id,
        since=hello.seq,
        match=lambda s: (
            isinstance(s.body, CodeEntered)
            and s.body.code == code_entered_code
            and s.id != events[0].id
        ),
    )
    if duplicates:
        raise StepFailed(
            "the device reported the same code-entered twice under two message ids: "
            "a resend keeps the id"
        )
    ids = [seen.message.id for seen in events if seen.message is not None]
    stored = await _applied(kit, ids)
    missing = [seen.type for seen in events if seen.message and seen.message.id not in stored]
    if missing:
        raise StepFailed(f"the server has not applied {', '.join(map(str, missing))}")
    for seen in events:
        assert seen.message is not None
        if stored[seen.message.id] != seen.message.occurred_at:
            raise StepFailed(f"{seen.type} was stored with another time (kit error)")


async def _applied(kit: Kit, ids: list[str]) -> dict[str, object]:
    """message id -> stored occurredAt of the device events the server applied, waiting
    until all of ``ids`` are (or the timeout passes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + kit.timeout
    while True:
        rows = await kit.server.inbox(ids)
        stored: dict[str, object] = {row.message_id: row.occurred_at for row in rows}
        if len(stored) == len(set(ids)) or loop.time() > deadline:
            return stored
        await asyncio.sleep(0.05)


def _program_first_locker(kit: Kit, *, avoid: int) -> int | None:
    """A locker other than ``avoid`` holding a key, for program-first codes (key20 only)."""
    if kit.options.product != "key20":
        return None
    for locker in kit.stocked:
        if locker != avoid and kit.holds_key(locker):
            return locker
    return None


# --- program-first codes ----------------------------------------------------------------


async def program_first(kit: Kit) -> str:
    if kit.options.product != "key20":
        raise StepSkipped("only a key20 programs keys before they are taken")
    locker = _program_first_locker(kit, avoid=-1)
    if locker is None:
        raise StepFailed("no locker holds a key to program: stock at least two lockers")
    server, seconds = kit.server, kit.options.program_seconds
    # The server decides not to open (the key could not be programmed).
    refused = await server.add_code(locker, PincodePurpose.FETCH, program_first=True)
    refusal = server.program(refused, seconds=seconds, opens=False)
    await kit.synced(refused.version)
    since = kit.traffic.mark()
    done = await kit.operator.press_expecting_shut(
        f"{refused.code}#", "a program-first code the server will not open"
    )
    entered = await kit.expect(since, [code_entered(refused, "keypad")])
    _names_its_pincode(entered[0], refused)
    await _until(lambda: refusal.answered_at is not None, seconds + kit.timeout)
    opened = await kit.quiet(
        since, lambda s: s.type == "locker-opened" and s.data().locker_index == locker
    )
    if done.opened or opened:
        raise StepFailed(
            f"locker {locker} opened for a program-first code the server never opened: "
            "such a code opens only on the server's open-locker naming its pincodeId"
        )
    # The server programs the key, then opens.
    accepted = await server.add_code(locker, PincodePurpose.FETCH, program_first=True)
    server.program(accepted, seconds=seconds, opens=True)
    await kit.synced(accepted.version)
    since = kit.traffic.mark()
    done = await kit.operator.press(
        f"{accepted.code}#", then=f"wait for locker {locker} to open, " + hand_action(accepted)
    )
    events = await kit.expect(since, cycle(accepted, "keypad"), timeout=kit.timeout + seconds)
    _names_its_pincode(events[0], accepted)
    command = kit.traffic.select(
        kit.hw_id,
        "down",
        since=since,
        match=lambda s: s.type == "open-locker" and s.data().pincode_id == accepted.id,
    )
    opened_at = events[1]
    if done.opened or not command or opened_at.seq < command[0].seq:
        early = (opened_at.at - events[0].at) if not done.opened else 0.0
        raise StepFailed(
            f"locker {locker} opened {early:.2f} s after code-entered, before the server's "
            f"open-locker (the key was still being programmed for {seconds:g} s): a "
            "programFirst code keeps the door shut until open-locker names its pincodeId"
        )
    if await kit.acked(command[0]) is None:
        raise StepFailed("the device opened but did not ack open-locker")
    await kit.retire(refused, accepted)
    return (
        f"kept locker {locker} shut while the key was programmed and when the server declined; "
        "opened it on open-locker"
    )


def _names_its_pincode(seen: Seen, code: KitCode) -> None:
    data = seen.data()
    assert isinstance(data, CodeEntered)
    if data.pincode_id != code.id:
        raise StepFailed(
            f"code-entered of a program-first code carried pincodeId {data.pincode_id!r}; it "
            f"must name the synced id {code.id!r}, which the server's open-locker will name"
        )


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.02)


# --- messages the device must drop ------------------------------------------------------


async def malformed_server_messages(kit: Kit) -> str:
    locker = kit.opening_locker()
    server = kit.server
    bogus = server.new_code()
    version = await server.synced_version() + 1
    entry = {
        "id": new_message_id(),
        "code": bogus,
        "validFrom": "2000-01-01T00:00:00.000Z",
        "purpose": "fetch" if kit.holds_key(locker) else "return",
    }
    bad_messages: list[tuple[str, bytes]] = []

    def raw(type_: str, data: dict[str, object], **envelope: object) -> None:
        message_id = new_message_id()
        body = {
            "v": PROTOCOL_VERSION,
            "id": message_id,
            "type": type_,
            "occurredAt": format_utc(server.clock.now()),
            "hwId": kit.hw_id,
            "data": data,
            **envelope,
        }
        bad_messages.append((message_id, json.dumps(body).encode()))

    sync = {"full": False, "version": version, "removed": []}
    raw("sync", {**sync, "pincodes": [{**entry, "lockerIndex": str(locker)}]})
    raw("sync", {**sync, "pincodes": [{**entry, "lockerIndex": locker}]}, v=PROTOCOL_VERSION + 1)
    raw("open-locker", {"lockerIndex": -1, "reason": "service"})
    raw("unlock-everything", {"lockerIndex": locker})
    bad_messages.append((new_message_id(), b'{"v": 1, "type": "sync", "data": '))
    since = kit.traffic.mark()
    for _message_id, payload in bad_messages:
        await kit.traffic.publish(down_topic(server.settings.mqtt_topic_prefix, kit.hw_id), payload)
    # Still alive: it takes the next good sync.
    alive = await kit.code_that_opens(locker)
    done = await kit.operator.press_expecting_shut(
        f"{bogus}#", "a code that came only in malformed messages"
    )
    ids = {message_id for message_id, _ in bad_messages}
    problems = []
    if done.opened:
        problems.append("a door opened for the code of a malformed sync")
    reported = await kit.quiet(
        since,
        lambda s: (
            s.type == "locker-opened"
            or (isinstance(s.body, CodeEntered) and s.body.code == bogus)
            or (isinstance(s.body, Ack) and s.body.ref in ids and s.body.ok)
        ),
    )
    if reported:
        problems.append(
            ", ".join(sorted({str(s.type) for s in reported})) + " after the malformed messages"
        )
    if problems:
        raise StepFailed(
            "; ".join(problems) + ": a message that breaks its schema must be dropped whole"
        )
    await kit.retire(alive)
    return (
        f"dropped {len(bad_messages)} malformed server messages (a string lockerIndex, "
        "protocol version 2, lockerIndex -1, an unknown type, cut-off JSON) and kept working"
    )


async def drops_refused_message(kit: Kit) -> str:
    locker = kit.opening_locker()
    server, traffic = kit.server, kit.traffic
    code = await kit.code_that_opens(locker)
    loop = asyncio.get_running_loop()
    resend_wait = max(kit.timeout, 30.0)
    expected = cycle(code, "keypad")
    # With the gateway stopped nothing is acknowledged: the device must resend its first
    # event, and send nothing after it (one event in flight keeps them in order). The kit
    # then refuses that event as malformed, as the server does a message that breaks its
    # schema, and watches whether the device drops just that one and goes on.
    await server.stop()
    try:
        since = traffic.mark()
        await kit.operator.press(f"{code.code}#", then=hand_action(code))
        first = (await kit.expect(since, expected[:1]))[0]
        resent = await traffic.wait_for(
            kit.hw_id, "up", lambda s: s.id == first.id, timeout=resend_wait, since=first.seq + 1
        )
        if resent is None:
            raise StepFailed(
                f"the device did not resend its unacknowledged {first.type} within "
                f"{resend_wait:g} s: a device resends every event until it is acknowledged"
            )
        period = resent.at - first.at
        overtaking = traffic.select(
            kit.hw_id, since=first.seq + 1, match=lambda s: _is_event(s) and s.id != first.id
        )
        if overtaking:
            raise StepFailed(
                f"the device sent {overtaking[0].type} while its {first.type} was not yet "
                "acknowledged: one event is in flight at a time, so that the server applies "
                "them in order"
            )
        assert first.id is not None
        refused_from = traffic.mark()
        await traffic.send_as_server(
            kit.hw_id,
            "rejected",
            Rejected(
                reason=RejectReason.MALFORMED,
                ref=first.id,
                pointer="/data/code",
                detail="refused by device-test",
            ),
        )
        refused_at = loop.time()
        await kit.expect(refused_from, expected[1:2], timeout=resend_wait)
        await asyncio.sleep(2 * period + kit.options.quiet_seconds)
        after = refused_at + min(0.5, period / 2)
        again = traffic.select(
            kit.hw_id, since=refused_from, match=lambda s: s.id == first.id and s.at > after
        )
    finally:
        await server.start()
    if again:
        raise StepFailed(
            f"the device resent its {first.type} {len(again)} times after the server refused it "
            "as malformed: a message refused as malformed is dropped and never resent"
        )
    rest = await kit.expect(refused_from, expected[1:], timeout=resend_wait)
    ids = [seen.id for seen in rest if seen.id is not None]
    stored = await _applied(kit, ids)
    if len(stored) < len(ids):
        raise StepFailed("the rest of the queue did not reach the server once it was back")
    await kit.retire(code)
    return (
        f"resent its unacknowledged {first.type} every {period:.1f} s and nothing after it, "
        f"dropped it once refused as malformed, and delivered the other {len(ids)} events "
        "once the server was back"
    )


def _is_event(seen: Seen) -> bool:
    return seen.type in DEVICE_EVENTS


# --- the automat taken away -------------------------------------------------------------


async def replaced(kit: Kit) -> str:
    server = kit.server
    locker = kit.opening_locker()
    code = await kit.code_that_opens(locker)
    since = kit.traffic.mark()
    new_code = await server.replace()
    problems = await _refused_for_good(kit, since, code, RejectReason.REPLACED)
    if problems:
        raise StepFailed("; ".join(problems))
    since = kit.traffic.mark()
    await kit.operator.enter_installation_code(new_code)
    hello = await kit.traffic.wait_for(
        kit.hw_id,
        "up",
        lambda s: isinstance(s.body, Hello) and s.body.installation_pincode == new_code,
        timeout=kit.timeout,
        since=since,
    )
    if hello is None:
        raise StepFailed(
            f"the device did not bind again with the new installation code {new_code}"
            + kit.meanwhile(since)
        )
    welcome = await kit.traffic.wait_for(
        kit.hw_id,
        "down",
        lambda s: isinstance(s.body, Welcome) and s.body.device_token is not None,
        timeout=kit.timeout,
        since=hello.seq,
    )
    if welcome is None:
        raise StepFailed("the server did not welcome the device with the new code")
    body = welcome.body
    assert isinstance(body, Welcome)
    kit.token = body.device_token
    kit.welcome_seq = welcome.seq
    await kit.synced(await server.desired_version())
    await kit.retire(code)
    return (
        "refused with 'replaced', it stopped using its token and opened nothing with its stored "
        "codes; it bound again with the new installation code"
    )


async def deactivated(kit: Kit) -> str:
    state, bound = await kit.server.lifecycle()
    if state != LifecycleState.ACTIVE or bound != kit.hw_id:
        raise StepSkipped("the device is not bound (see the step before)")
    locker = kit.opening_locker()
    code = await kit.code_that_opens(locker)
    since = kit.traffic.mark()
    await kit.server.uninstall()
    problems = await _refused_for_good(kit, since, code, RejectReason.DEACTIVATED)
    if problems:
        raise StepFailed("; ".join(problems))
    return (
        "refused with 'deactivated', it stopped using its token and opened nothing with its "
        "stored codes"
    )


async def _refused_for_good(kit: Kit, since: int, code: KitCode, reason: RejectReason) -> list[str]:
    """The device's next message is refused with ``reason``: it must stop using its token
    and never again open for the codes it holds. What it did wrong."""
    refusal = await kit.traffic.wait_for(
        kit.hw_id,
        "down",
        lambda s: s.type == "rejected",
        timeout=kit.timeout + 2 * kit.heartbeat_seconds,
        since=since,
    )
    if refusal is None:
        return ["the device sent nothing the server could refuse (it must keep sending heartbeats)"]
    problems = []
    said = refusal.data().reason
    if said != reason:
        problems.append(
            f"the server refused with {said!r}, not {reason.value!r}: this server predates "
            "the refusal reasons of protocol 1.0 (a kit error, not the device's)"
        )
    done = await kit.operator.press_expecting_shut(
        f"{code.code}#", f"the automat is {reason.value}: the device must have wiped its codes"
    )
    reported = await kit.quiet(
        refusal.seq,
        lambda s: (
            s.type == "locker-opened"
            or (isinstance(s.body, CodeEntered) and s.body.code == code.code)
        ),
    )
    if done.opened or reported:
        problems.append(
            f"locker {code.locker_index} opened for a stored code after the server said "
            f"{reason.value!r}: the device must wipe its code store"
        )
    grace = refusal.at + 1.0
    token = kit.token
    still = kit.traffic.select(
        kit.hw_id,
        since=refusal.seq,
        match=lambda s: s.at > grace and s.message is not None and s.message.token == token,
    )
    if still:
        problems.append(
            f"the device kept sending with its revoked token ({len(still)} messages, "
            f"{', '.join(sorted({str(s.type) for s in still}))})"
        )
    return problems


# --- over the whole run -----------------------------------------------------------------


async def well_formed(kit: Kit) -> str:
    sent = kit.traffic.select(kit.hw_id)
    bad = [seen for seen in sent if seen.problem is not None]
    if bad:
        shown = "; ".join(f"{seen.problem}" for seen in bad[:3])
        raise StepFailed(f"{len(bad)} of {len(sent)} messages broke the protocol: {shown}")
    events = [seen for seen in sent if seen.type in DEVICE_EVENTS]
    return (
        f"all {len(sent)} messages the device sent ({len(events)} events) decoded under "
        "protocol v1 and named their own hwId"
    )


STEPS: tuple[Step, ...] = (
    Step(
        "binding",
        "hello with the installation code (and product, lockerCount) is answered by welcome "
        "with a deviceToken; every later message carries that token (§5)",
        binding,
    ),
    Step(
        "locker-inventory",
        "after each welcome a locker-inventory that lists every locker 0..lockerCount-1 "
        "exactly once, 0-based (§3)",
        locker_inventory,
        ("binding",),
    ),
    Step(
        "heartbeat",
        "a heartbeat at least every heartbeatSeconds of the welcome (§3.1)",
        heartbeat,
        ("binding",),
    ),
    Step(
        "clock",
        "occurredAt of live messages within --max-skew-seconds of the server's time: keep UTC, "
        "from NTP or the welcome's serverTime",
        clock,
        ("binding",),
    ),
    Step(
        "sync",
        "every sync (the full one after welcome, incremental ones after changes) acknowledged "
        "with ack ok:true and ref = the sync's id (§6)",
        sync,
        ("locker-inventory",),
    ),
    Step(
        "fetch-at-keypad",
        "a synced fetch code typed at the keypad: code-entered (right-pincode, source keypad), "
        "locker-opened, key-removed, locker-closed, in order (§3)",
        fetch_at_keypad,
        ("sync",),
    ),
    Step(
        "return-at-keypad",
        "a synced return code typed at the keypad: code-entered (right-return-code), "
        "locker-opened, key-inserted, locker-closed, in order (§3)",
        return_at_keypad,
        ("fetch-at-keypad",),
    ),
    Step(
        "codes-that-must-not-open",
        "a spent fetch code, a code the server removed and a code before its validFrom open "
        "nothing and are not reported (§3.2)",
        codes_that_must_not_open,
        ("return-at-keypad",),
    ),
    Step(
        "remote-code",
        "remote-code is acked and handled as if typed: code-entered with source remote, "
        "then the locker's events (§7)",
        remote_code,
        ("locker-inventory",),
    ),
    Step(
        "proximity-prompt",
        "proximity-prompt is acked; another command meanwhile gets ack ok:false reason busy; "
        "cancel-prompt ends it (prompt-ended cancelled); # confirms it (prompt-ended "
        "confirmed, then as a remote code) (§7)",
        proximity_prompt,
        ("locker-inventory",),
    ),
    Step(
        "offline-replay",
        "events made offline are queued and sent after the next hello, in order, with the "
        "times they happened, each once; a program-first code never opens offline (§4)",
        offline_replay,
        ("locker-inventory",),
    ),
    Step(
        "program-first",
        "a programFirst code reports code-entered with its pincodeId and keeps the door shut "
        "until open-locker names that pincodeId; without it the door stays shut (key20)",
        program_first,
        ("locker-inventory",),
    ),
    Step(
        "malformed-server-messages",
        "server messages that break their schema (wrong types, another protocol version, "
        "unknown type, cut-off JSON) are dropped whole: nothing applied, nothing opened",
        malformed_server_messages,
        ("locker-inventory",),
    ),
    Step(
        "drops-refused-message",
        "unacknowledged events are resent; one refused with rejected reason malformed is "
        "dropped and never resent, the rest of the queue is kept (§4a)",
        drops_refused_message,
        ("locker-inventory",),
    ),
    Step(
        "replaced",
        "refused with reason replaced: the device wipes its codes, stops using its token, and "
        "binds again when an installer enters the new installation code (§4a, §5)",
        replaced,
        ("locker-inventory",),
    ),
    Step(
        "deactivated",
        "refused with reason deactivated: the device wipes its codes and stops using its "
        "token (§4a)",
        deactivated,
        ("locker-inventory",),
    ),
    Step(
        "well-formed",
        "every message the device sent decodes under protocol v1 and names the hwId of its "
        "topic (§2)",
        well_formed,
        ("binding",),
    ),
)
