"""Rules only: no I/O, no framework; ``now`` is always an argument."""
