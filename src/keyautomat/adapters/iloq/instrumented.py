"""An iLOQ port that times every call and counts its errors (``keyautomat_iloq_call_*``).

The factory wraps each port it hands out in one, so the emulator and the S5
client are measured the same way and neither knows about metrics.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import TypeVar

from keyautomat import metrics
from keyautomat.service_layer.iloq import (
    AccessRight,
    IloqError,
    IloqPort,
    KeyInfo,
    ProgrammingRecord,
)

T = TypeVar("T")


class InstrumentedIloq:
    def __init__(self, port: IloqPort, system: str) -> None:
        """``system``: "emulator" or "s5", the label of every call's metrics."""
        self.port = port
        self.system = system

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        began = time.perf_counter()
        error: str | None = "transient"
        try:
            result = await call
            error = None
            return result
        except IloqError as exc:
            error = "permanent" if exc.permanent else "transient"
            raise
        finally:
            # Anything else (a bug, a cancel) counts as transient: nothing is known done.
            metrics.iloq_call_done(self.system, operation, time.perf_counter() - began, error)

    async def list_access_rights(
        self, *, search: str | None = None, default_only: bool = False
    ) -> list[AccessRight]:
        return await self._timed(
            "list_access_rights",
            self.port.list_access_rights(search=search, default_only=default_only),
        )

    async def get_key(self, key_id: str) -> KeyInfo | None:
        return await self._timed("get_key", self.port.get_key(key_id))

    async def create_key(self, *, key_id: str, name: str) -> KeyInfo:
        return await self._timed("create_key", self.port.create_key(key_id=key_id, name=name))

    async def program_key(
        self,
        key_id: str,
        access_right_ids: Sequence[str],
        *,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
        person_id: str | None = None,
    ) -> KeyInfo:
        return await self._timed(
            "program_key",
            self.port.program_key(
                key_id,
                access_right_ids,
                valid_from=valid_from,
                valid_until=valid_until,
                person_id=person_id,
            ),
        )

    async def wipe_key(self, key_id: str) -> KeyInfo:
        return await self._timed("wipe_key", self.port.wipe_key(key_id))

    async def blocklist_key(self, key_id: str) -> None:
        await self._timed("blocklist_key", self.port.blocklist_key(key_id))

    async def programming_log(self, key_id: str | None = None) -> list[ProgrammingRecord]:
        return await self._timed("programming_log", self.port.programming_log(key_id))
