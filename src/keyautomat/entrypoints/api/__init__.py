"""The HTTP API: LivionKey V2 under /v2."""
