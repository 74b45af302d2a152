"""The iLOQ S5 public API client against the emulator served by a real HTTP server."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from keyautomat.adapters.iloq.s5_client import IloqS5Client
from keyautomat.bootstrap import Container
from keyautomat.client import Client
from keyautomat.config import Settings
from keyautomat.domain.model import IloqApiUser
from keyautomat.service_layer.iloq import (
    IloqApiConfig,
    IloqPermanentError,
    IloqTransientError,
    ensure_key,
)
from tests.conftest import TEST_BASE, Tenant
from tests.iloq_helpers import SeededSystem, make_unit, on_system, seed_system
from tests.integration.iloq_support import EmulatorServer, serve_emulator

PASSWORD = "correct horse battery staple"
START = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
END = datetime(2030, 6, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Live mode: units whose service address is an http(s) URL get the S5 client.

    The emulator's HTTP face listens on loopback over plain http, which only the
    operator setting allows.
    """
    return settings.model_copy(update={"iloq_mode": "live", "iloq_allow_private": True})


@pytest.fixture
def emulator_server(settings: Settings) -> Iterator[EmulatorServer]:
    yield from serve_emulator(settings)


@pytest.fixture
def seeded(container: Container, emulator_server: EmulatorServer) -> SeededSystem:
    iloq = IloqApiUser("api.keyautomat", PASSWORD, "ACME-S5", emulator_server.url)
    return seed_system(container, make_unit(container, iloq=iloq))


@pytest.fixture
def client(emulator_server: EmulatorServer, seeded: SeededSystem) -> IloqS5Client:
    del seeded
    config = IloqApiConfig("api.keyautomat", PASSWORD, "ACME-S5", emulator_server.url)
    # The emulator answers in milliseconds; the bound is only there so that a hang fails.
    # 5 s once ran out under two xdist workers (a ReadTimeout on POST Keys/{id}/Order).
    return IloqS5Client(config, timeout=30, allow_private=True)


def test_the_client_lists_access_rights_with_flags_and_real_estate_paths(
    client: IloqS5Client, seeded: SeededSystem
) -> None:
    rights = asyncio.run(client.list_access_rights())
    assert [r.name for r in rights] == ["Front door", "Office", "Sauna", "Storage room"]
    by_id = {r.id: r for r in rights}
    assert by_id[seeded.sauna].real_estate_path == "Mannerheimintie 1 / Stair A"
    assert by_id[seeded.sauna].default_access
    assert not by_id[seeded.office].api_enabled
    assert [r.name for r in asyncio.run(client.list_access_rights(search="door"))] == ["Front door"]
    defaults = asyncio.run(client.list_access_rights(default_only=True))
    assert [r.name for r in defaults] == ["Front door", "Office", "Sauna"]


def test_programming_over_http_writes_the_key_and_the_emulator_logs_the_time(
    container: Container, client: IloqS5Client, seeded: SeededSystem
) -> None:
    person = "f5ac6bce-eac9-4508-a5cf-a0114dc06477"
    before = datetime.now(UTC)
    key = asyncio.run(
        client.program_key(
            seeded.key_id,
            [seeded.front_door, seeded.sauna],
            valid_from=START,
            valid_until=END,
            person_id=person,
        )
    )
    assert set(key.access_right_ids) == {seeded.front_door, seeded.sauna}
    assert (key.valid_from, key.valid_until, key.person_id) == (START, END, person)
    [entry] = on_system(container, seeded.unit_id, lambda s: s.log(seeded.key_id))
    assert entry.action == "program"
    assert before <= entry.at <= datetime.now(UTC)
    # iLOQ times travel with millisecond precision.
    over_http = asyncio.run(client.programming_log(seeded.key_id))[0].at
    assert over_http == entry.at.replace(microsecond=entry.at.microsecond // 1000 * 1000)


def test_a_key_without_a_person_is_registered_to_the_default_person_over_http(
    container: Container, client: IloqS5Client, seeded: SeededSystem
) -> None:
    key = asyncio.run(client.program_key(seeded.key_id, [seeded.sauna]))
    assert key.person_id == on_system(container, seeded.unit_id, lambda s: s.default_person_id())


def test_wiping_over_http_leaves_the_key_blank(client: IloqS5Client, seeded: SeededSystem) -> None:
    asyncio.run(client.program_key(seeded.key_id, [seeded.sauna], valid_from=START))
    key = asyncio.run(client.wipe_key(seeded.key_id))
    assert key.is_blank
    assert key.valid_from is None
    assert [e.action for e in asyncio.run(client.programming_log())] == ["program", "wipe"]


def test_a_right_that_is_not_api_enabled_fails_permanently_over_http(
    client: IloqS5Client, seeded: SeededSystem
) -> None:
    with pytest.raises(IloqPermanentError, match="not enabled for the public API"):
        asyncio.run(client.program_key(seeded.key_id, [seeded.office]))
    key = asyncio.run(client.get_key(seeded.key_id))
    assert key is not None
    assert key.is_blank


def test_a_blocklisted_key_is_reported_and_cannot_be_programmed_over_http(
    client: IloqS5Client, seeded: SeededSystem
) -> None:
    asyncio.run(client.program_key(seeded.key_id, [seeded.sauna]))
    asyncio.run(client.blocklist_key(seeded.key_id))
    asyncio.run(client.blocklist_key(seeded.key_id))
    key = asyncio.run(client.get_key(seeded.key_id))
    assert key is not None
    assert key.blocked
    with pytest.raises(IloqPermanentError, match="blocklisted"):
        asyncio.run(client.program_key(seeded.key_id, [seeded.front_door]))


def test_keys_are_created_over_http_and_unknown_ones_read_as_none(client: IloqS5Client) -> None:
    key_id = "0b0e0000-0000-4000-8000-000000000002"
    assert asyncio.run(client.get_key(key_id)) is None
    created = asyncio.run(ensure_key(client, key_id, "0B0E000"))
    assert (created.id, created.name, created.is_blank) == (key_id, "0B0E000", True)
    with pytest.raises(IloqPermanentError, match="does not exist"):
        asyncio.run(client.wipe_key("0b0e0000-0000-4000-8000-00000000ffff"))


def test_an_expired_session_is_renewed_once(
    client: IloqS5Client, emulator_server: EmulatorServer, seeded: SeededSystem
) -> None:
    assert asyncio.run(client.get_key(seeded.key_id)) is not None
    emulator_server.state.sessions.clear()
    assert asyncio.run(client.get_key(seeded.key_id)) is not None


def test_wrong_credentials_fail_permanently_without_revealing_the_password(
    emulator_server: EmulatorServer, seeded: SeededSystem
) -> None:
    del seeded
    wrong = "not-the-password-123"
    client = IloqS5Client(
        IloqApiConfig("api.keyautomat", wrong, "ACME-S5", emulator_server.url), allow_private=True
    )
    with pytest.raises(IloqPermanentError) as caught:
        asyncio.run(client.list_access_rights())
    assert "refused the session" in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in repr(client.config)


def test_an_unreachable_system_is_a_transient_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = IloqS5Client(
        IloqApiConfig("u", "p", "c", f"http://127.0.0.1:{port}"), timeout=2, allow_private=True
    )
    with pytest.raises(IloqTransientError, match="cannot be reached"):
        asyncio.run(client.list_access_rights())


def test_a_server_error_is_a_transient_failure() -> None:
    transport = httpx.MockTransport(lambda _request: httpx.Response(503, json={"Message": "busy"}))
    client = IloqS5Client(IloqApiConfig("u", "p", "c", "https://s5.example"), transport=transport)
    with pytest.raises(IloqTransientError, match="503"):
        asyncio.run(client.get_key("k"))


def unit_with_iloq(operator: Tenant, http: object, service_address: str, password: str) -> Client:
    """A unit created through the API with an iloqApiUser, and a client of its own account."""
    created = operator.api.post(
        "/organizationUnits",
        {
            "type": 1,
            "name": "Live Housing",
            "customerId": "live",
            "iloqApiUser": {
                "username": "api.keyautomat",
                "password": password,
                "customerCode": "LIVE-S5",
                "serviceAddress": service_address,
            },
        },
    )
    assert created["iloqApiUser"]["password"] == "********"
    assert password not in str(created)
    account = operator.api.post(
        "/serviceAccounts", {"organizationUnitId": created["id"], "name": "live"}
    )
    client = Client(TEST_BASE, account["id"], account["privateKey"], http=http)  # type: ignore[arg-type]
    client.unit_id = created["id"]  # type: ignore[attr-defined]
    return client


def test_access_rights_of_a_live_unit_come_over_http_from_its_iloq_system(
    container: Container, http: object, operator: Tenant, emulator_server: EmulatorServer
) -> None:
    live = unit_with_iloq(operator, http, emulator_server.url, PASSWORD)
    seed_system(container, live.unit_id)  # type: ignore[attr-defined]
    body = live.get("/iloq/accessRights?returnDefaultAccessesOnly=true")
    assert [r["name"] for r in body["data"]] == ["Front door", "Sauna"]
    assert body["data"][1]["realEstatePath"] == "Mannerheimintie 1 / Stair A"
    assert PASSWORD not in str(body)
    # The operator's own unit has no iLOQ configuration: an empty emulated system.
    assert operator.api.get("/iloq/accessRights")["data"] == []


def test_an_unreachable_iloq_system_answers_503_and_refused_credentials_502(
    container: Container, http: object, operator: Tenant
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    unreachable = unit_with_iloq(operator, http, dead, PASSWORD)
    response = unreachable.request("GET", "/iloq/accessRights")
    assert response.status_code == 503
    assert response.json()["message"] == "iLOQ system is not reachable; try again later"
    # A system that refuses the credentials (the customer changed them in iLOQ).
    container.iloq.transport = httpx.MockTransport(
        lambda request: httpx.Response(
            401 if request.url.path.endswith("/CreateSession") else 200,
            json={"Message": "Invalid user"} if "Session" in request.url.path else "",
        )
    )
    refused = unit_with_iloq(operator, http, "https://s5.example", PASSWORD)
    response = refused.request("GET", "/iloq/accessRights")
    assert response.status_code == 502
    assert "refused the session" in response.json()["message"]
    assert PASSWORD not in response.text


# -- SSRF (issue 11 item 4) -------------------------------------------------------


def _listener() -> socket.socket:
    """A loopback socket that listens but never accepts: a connection would wait in its backlog."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def _was_connected(listener: socket.socket) -> bool:
    listener.settimeout(0.2)
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        return False
    connection.close()
    return True


def test_the_client_never_connects_to_a_private_address_without_the_operator_setting() -> None:
    async def to_loopback(_host: str, _port: int) -> list[str]:
        return ["127.0.0.1"]

    with _listener() as listener:
        port = listener.getsockname()[1]
        for address in (f"https://s5.test:{port}", f"https://127.0.0.1:{port}"):
            client = IloqS5Client(
                IloqApiConfig("u", PASSWORD, "c", address), timeout=2, resolve=to_loopback
            )
            with pytest.raises(IloqTransientError) as caught:
                asyncio.run(client.list_access_rights())
            assert str(caught.value).endswith("cannot be reached")
        assert not _was_connected(listener)


def test_every_failure_to_connect_gives_the_same_error_so_ports_cannot_be_probed() -> None:
    """A closed port, a port that hangs up and one that never answers look the same."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    hang_up = socket.socket()
    hang_up.bind(("127.0.0.1", 0))
    hang_up.listen(8)

    def refuse_everything() -> None:
        while True:
            try:
                connection, _ = hang_up.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=refuse_everything, daemon=True).start()
    messages = set()
    with _listener() as silent:
        for port in (closed, hang_up.getsockname()[1], silent.getsockname()[1]):
            client = IloqS5Client(
                IloqApiConfig("u", "p", "c", f"http://127.0.0.1:{port}"),
                timeout=0.5,
                allow_private=True,
            )
            with pytest.raises(IloqTransientError) as caught:
                asyncio.run(client.list_access_rights())
            messages.add(str(caught.value))
    hang_up.close()
    assert messages == {"iLOQ S5 at 127.0.0.1 cannot be reached"}


@pytest.mark.parametrize(
    "answer",
    [
        "https://user:secret@s5-other.example",  # credentials
        "https://s5-other.example/?steal=1",  # a query
        "http://s5-other.example",  # plain http
        "https://10.0.0.5",  # a private address
        "169.254.169.254",  # host only: becomes https://169.254.169.254, cloud metadata
    ],
)
def test_a_get_url_answer_is_vetted_before_the_password_is_sent_there(answer: str) -> None:
    seen: list[str] = []

    def s5(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=answer)

    client = IloqS5Client(
        IloqApiConfig("u", PASSWORD, "c", "https://s5.example"), transport=httpx.MockTransport(s5)
    )
    with pytest.raises(IloqTransientError, match="cannot be reached"):
        asyncio.run(client.list_access_rights())
    assert seen == ["/api/v2/Url/GetUrl"]
