"""Implementations of the ports: storage, crypto, device links, transports."""
