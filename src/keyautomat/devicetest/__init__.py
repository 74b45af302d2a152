"""The conformance kit for hardware makers: ``keyautomat device-test`` plays the server's
side of the device protocol against a device under test (docs/device-test.md)."""

# The kit's topic prefix unless told otherwise: one no production gateway listens on.
DEFAULT_PREFIX = "keyautomat-device-test/v1"
