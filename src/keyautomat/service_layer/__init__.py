"""Use cases: one function per command, run inside one unit of work (a Session)."""
