"""Our own admin API under ``/admin`` (outside the V2 wire format, signed the same way)."""
