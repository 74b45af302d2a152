"""Ways in: the HTTP API, the CLI, and (later) the worker and the device gateway."""
