"""What the tests over a real Mosquitto share: the broker, settings for a private topic
prefix of their own, and simulated automats on the broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from starlette.testclient import TestClient

from keyautomat.adapters.device_links import MqttLink
from keyautomat.bootstrap import Container
from keyautomat.config import Settings
from tests.devices import FAST_DEVICE_SETTINGS, Simulators
from tests.services import MQTT_HOST, MQTT_PORT, need

BROKER = f"mqtt://{MQTT_HOST}:{MQTT_PORT}"


def over_mqtt(settings: Settings, **overrides: Any) -> Settings:
    """``settings`` with fast device timings, on the broker, under a topic prefix and a
    client id no other test run uses; skipped (or failed in CI) without a broker."""
    need("MQTT", MQTT_HOST, MQTT_PORT)
    run = uuid.uuid4().hex[:10]
    return settings.model_copy(
        update={
            **FAST_DEVICE_SETTINGS,
            "device_ack_timeout_seconds": 2.0,
            "mqtt_url": BROKER,
            "mqtt_topic_prefix": f"test-{run}/keyautomat/v1",
            "mqtt_client_id": f"gw-{run}",
            **overrides,
        }
    )


def simulators_on_the_broker(http: TestClient, container: Container) -> Iterator[Simulators]:
    simulators = Simulators(http, container, link=MqttLink(BROKER))
    yield simulators
    simulators.stop_all()
