"""Telling a session takeover by a twin node from an ordinary lost connection, and the backoff.

Two nodes with one node_id (a cloned SD card: the default id is the host name) use one MQTT
client id, and a broker keeps one session per client id: each CONNECT closes the other node's
connection. paho reconnects after 1 s and resets its backoff on every accepted CONNECT, so the two
take the session from each other about once a second, and the retained status flaps between
the Will's `offline` and `online` as often.

MQTT 3.1.1 gives the node that lost no reason (the broker just closes the socket; mosquitto
2.0.11 sends no DISCONNECT even under MQTT 5, where a newer broker says 0x8E "Session taken
over"). What is left is the pattern: the broker drops a connection it accepted moments ago, and
does it again after each reconnect. `TakeoverWatch` counts such drops in a row; at
`Policy.streak` it declares a conflict and the publisher waits `backoff_s` (doubling up to
`max_backoff_s`) between reconnects, so at most one takeover per backoff remains. A connection
that lasts `stable_s` (longer than the longest backoff a twin could be sitting out) ends it.

Pure logic with the times passed in: the publisher calls it from paho's thread under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final


@dataclass(frozen=True)
class Policy:
    short_s: float = 5.0
    """A connection the broker closes within this long after its CONNACK looks taken over. A
    twin with paho's 1 s reconnect takes it after ~1 s; a node's own keepalive cannot expire this
    soon (mqtt.keepalive_s >= 5, and the broker waits 1.5 times that)."""
    streak: int = 3
    """Short drops in a row that make a conflict: one is a broker restart, three is a pattern."""
    backoff_s: float = 10.0
    """The first wait before reconnecting once a conflict is declared; doubles per further drop."""
    max_backoff_s: float = 300.0
    stable_s: float = 360.0
    """A connection this long ends a conflict: longer than max_backoff_s, so a twin that is only
    sitting out its own backoff cannot make it look over."""


DEFAULT_POLICY: Final = Policy()
MAX_DOUBLINGS: Final = 30
"""Far past any max_backoff_s; keeps 2**n a small number however long a conflict lasts."""


class Drop(Enum):
    """What a lost connection meant."""

    ORDINARY = "ordinary"
    TAKEOVER = "takeover"
    """Looked taken over; not (yet) a conflict."""
    CONFLICT = "conflict"
    """This drop made the streak: a conflict starts now (log it, once)."""
    IN_CONFLICT = "in_conflict"
    """Another drop during a known conflict."""


class TakeoverWatch:
    """The connection history that matters: when the current connection began, the streak."""

    def __init__(self, policy: Policy = DEFAULT_POLICY) -> None:
        self.policy = policy
        self.takeovers = 0
        """Drops that looked like takeovers, since start (health: mqtt_takeovers)."""
        self.streak = 0
        self.conflict = False
        self._connected_at: float | None = None

    def connected(self, now: float) -> None:
        self._connected_at = now

    def lost(self, now: float, *, taken_over: bool = False) -> Drop:
        """The broker closed our connection (not us); ``taken_over`` when it said so (MQTT 5
        reason 0x8E). Call `settle` first: a connection that lasted stable_s ends a conflict."""
        began, self._connected_at = self._connected_at, None
        lasted_s = None if began is None else now - began
        if not taken_over and (lasted_s is None or lasted_s >= self.policy.short_s):
            if not self.conflict:
                # A connection that lived a while: not the pattern. In a conflict it proves
                # nothing (a twin in its own backoff leaves us the session for that long).
                self.streak = 0
                return Drop.ORDINARY
            return Drop.IN_CONFLICT
        self.takeovers += 1
        self.streak += 1
        if self.conflict:
            return Drop.IN_CONFLICT
        if self.streak >= self.policy.streak:
            self.conflict = True
            return Drop.CONFLICT
        return Drop.TAKEOVER

    def settle(self, now: float) -> bool:
        """End the conflict once the current connection has lasted stable_s; True when this call
        ended it."""
        began = self._connected_at
        if not self.conflict or began is None or now - began < self.policy.stable_s:
            return False
        self.conflict = False
        self.streak = 0
        return True

    def backoff_s(self) -> float | None:
        """The wait before the next reconnect while in conflict, else None (paho's own)."""
        if not self.conflict:
            return None
        doublings = min(MAX_DOUBLINGS, max(0, self.streak - self.policy.streak))
        return float(min(self.policy.max_backoff_s, self.policy.backoff_s * 2**doublings))
