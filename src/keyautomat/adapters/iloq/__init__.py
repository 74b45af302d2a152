"""The two adapters of the iLOQ port: the built-in emulator and the iLOQ S5 public API client."""
