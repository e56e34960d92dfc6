"""The declarative REST connector: a JSON-over-HTTP API described entirely in YAML, and a fake to test it."""
