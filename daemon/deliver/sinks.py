"""Where finished messages go: the `Sink` protocol and every implementation, in one module.

A message is a typed `Verdict` or `AlarmChange`. `store` keeps it (or sends it on) and returns
it as stored: a verdict comes back with the seq the outbox stamped on it in the very
transaction that committed it, so no verdict exists anywhere without its seq.

    OutboxSink      MQTT on: commit to the outbox; the drainer publishes and the ack deletes
    NumberOnlySink  MQTT off: number each verdict (seq never repeats for a node), keep nothing
    EchoSink        replay: after the inner sink, print each verdict as one JSON line
    RememberAlarm   live: after the inner sink, record the alarm state for the next start
"""

from __future__ import annotations

from typing import Final, Protocol, TextIO

from daemon.analyse.alarm import AlarmChange
from daemon.analyse.verdict import Verdict
from daemon.deliver.outbox import Message, Outbox

Outgoing = Verdict | AlarmChange

ALARM_STATE_KEY: Final = "alarm_active"
"""Outbox state key: 1 while the last published alarm state is `alarm`."""


class Sink(Protocol):
    """Stores one message; returns it as stored (a verdict with its seq)."""

    def store(self, message: Outgoing) -> Outgoing: ...


class OutboxSink:
    """Each message is committed to the outbox before `store` returns. Verdicts get the next
    seq in the same transaction; alarm changes are stored without one and published retained.
    A drainer (daemon.deliver.drain) hands the rows to MQTT afterwards."""

    def __init__(self, outbox: Outbox, *, qos: int = 1) -> None:
        self.outbox = outbox
        self.qos = qos

    def store(self, message: Outgoing) -> Outgoing:
        if isinstance(message, AlarmChange):
            self.outbox.add(Message("alarm", message.to_json(), self.qos, True))
            return message
        stamped: list[Verdict] = []

        def numbered(seq: int) -> Message:
            stamped.append(message.with_seq(seq))
            return Message("verdict", stamped[-1].to_json(), self.qos, False)

        self.outbox.add_numbered(numbered)
        return stamped[-1]


class NumberOnlySink:
    """MQTT disabled: give each verdict the next seq (the outbox's counter), keep nothing."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def store(self, message: Outgoing) -> Outgoing:
        if isinstance(message, AlarmChange):
            return message
        stamped: list[Verdict] = []

        def numbered(seq: int) -> Message:
            stamped.append(message.with_seq(seq))
            return Message("verdict", b"", 0, False)

        row = self.outbox.add_numbered(numbered)
        self.outbox.ack(row.id)
        return stamped[-1]


class EchoSink:
    """Writes every verdict to a stream as one JSON line, after the inner sink stored it."""

    def __init__(self, inner: Sink, out: TextIO) -> None:
        self._inner = inner
        self._out = out

    def store(self, message: Outgoing) -> Outgoing:
        stored = self._inner.store(message)
        if isinstance(stored, Verdict):
            self._out.write(stored.to_json().decode("utf-8") + "\n")
            self._out.flush()
        return stored


class RememberAlarm:
    """Passes messages on and records each alarm change in the outbox, so it survives restarts."""

    def __init__(self, inner: Sink, outbox: Outbox) -> None:
        self._inner = inner
        self._outbox = outbox

    def store(self, message: Outgoing) -> Outgoing:
        stored = self._inner.store(message)
        if isinstance(stored, AlarmChange):
            self._outbox.set_state(ALARM_STATE_KEY, int(stored.state == "alarm"))
        return stored
