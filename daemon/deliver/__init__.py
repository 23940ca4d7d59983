"""Deliver: the outbox (SQLite), the drainer and the MQTT publisher."""
