"""A key automat in software that speaks only the device protocol (docs/device-protocol.md)."""

from keyautomat.simulator.automat import (
    Person,
    SimKey,
    SimulatedAutomat,
    blank_iloq_keys,
    mechanical_keys,
)

__all__ = ["Person", "SimKey", "SimulatedAutomat", "blank_iloq_keys", "mechanical_keys"]
