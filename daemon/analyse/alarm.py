"""k-of-n alarm with hysteresis: raise when k of the last n windows are anomalous, clear when
none of the last n are.

Windows whose sensor state is not "ok" (silence, flat line, clipping) say nothing about the
tower, so they neither raise nor clear the alarm.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

AlarmState = Literal["alarm", "clear"]


@dataclass(frozen=True)
class AlarmChange:
    state: AlarmState
    since: str
    k: int
    n: int
    score: float
    seq: int = 0
    """The seq of the verdict whose window changed the state: alarm changes are ordered by it
    (a late one from the outbox is told from the current state), and it never repeats."""

    def with_seq(self, seq: int) -> AlarmChange:
        return dataclasses.replace(self, seq=seq)

    def payload(self) -> dict[str, Any]:
        """The alarm JSON object (daemon/schemas/alarm.schema.json)."""
        return {
            "state": self.state,
            "since": self.since,
            "k": self.k,
            "n": self.n,
            "score": self.score,
            "seq": self.seq,
            "replayed": False,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":")).encode("utf-8")


class Alarm:
    """Tracks the last n usable window labels and reports state changes."""

    def __init__(self, *, k: int, n: int, state: AlarmState = "clear") -> None:
        if not 1 <= k <= n:
            raise ValueError(f"alarm needs 1 <= k <= n, got k={k}, n={n}")
        self.k = k
        self.n = n
        self._recent: deque[bool] = deque(maxlen=n)
        # A restarted daemon resumes the state it last published, so a standing alarm is
        # cleared by n normal windows instead of being forgotten.
        self.state: AlarmState = state

    def update(self, *, anomalous: bool, usable: bool, score: float, at: str) -> AlarmChange | None:
        """Feed one window; returns the change when the state flips, else None."""
        if not usable:
            return None
        self._recent.append(anomalous)
        count = sum(self._recent)
        if self.state == "clear" and count >= self.k:
            self.state = "alarm"
        elif self.state == "alarm" and count == 0 and len(self._recent) == self.n:
            self.state = "clear"
        else:
            return None
        return AlarmChange(self.state, at, self.k, self.n, round(float(score), 6))

    def reconfigured(self, *, k: int, n: int) -> Alarm:
        """The same alarm under a new k of n (a reload): its state and the most recent n of its
        window labels carry over, so a standing alarm is neither forgotten nor raised anew."""
        alarm = Alarm(k=k, n=n, state=self.state)
        alarm._recent.extend(list(self._recent)[-n:])
        return alarm
