"""The webhook sender's kept-alive connections, against real receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio

from keyautomat.adapters.webhook_sender import HttpWebhookSender
from tests.webhook_receiver import running_receiver


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_idle_connections_close_and_receivers_go_even_if_that_receiver_is_never_used_again() -> (
    None
):
    ticks = Ticks()
    # Connections expire as soon as they are idle; the sweep's pace is the ticks'.
    sender = HttpWebhookSender(allow_private=True, keepalive_expiry=0.0, monotonic=ticks)
    headers = {"content-type": "application/json"}
    with running_receiver() as first, running_receiver() as second:

        async def scenario() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
            try:
                await sender.post(first.url, headers, b"{}")
                after_first = sender.kept_alive()
                ticks.now += 0.5  # too soon for another sweep
                await sender.post(second.url, headers, b"{}")
                too_soon = sender.kept_alive()
                ticks.now += 1.0
                await sender.post(second.url, headers, b"{}")
                return after_first, too_soon, sender.kept_alive()
            finally:
                await sender.aclose()

        after_first, too_soon, swept = asyncio.run(scenario())
    one, two = f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"
    assert after_first == {one: 1}
    assert too_soon == {one: 1, two: 1}
    # The first receiver's expired connection was closed and the receiver dropped; the
    # second's was expired too when it was taken for this post, which kept the new one.
    assert swept == {two: 1}
