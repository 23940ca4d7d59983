"""daemon.analyse.alarm: k-of-n hysteresis."""

from __future__ import annotations

import pytest

from daemon.analyse.alarm import Alarm


def feed(alarm: Alarm, labels: str, usable: bool = True) -> list[str]:
    """Feed 'a'/'n' labels; return the states of the changes reported."""
    changes: list[str] = []
    for i, label in enumerate(labels):
        change = alarm.update(anomalous=label == "a", usable=usable, score=0.9, at=f"t{i}")
        if change is not None:
            changes.append(change.state)
    return changes


class TestAlarm:
    def test_raises_at_k_of_n(self) -> None:
        """Two anomalous windows of the last three do not alarm at k=3; a third does."""
        alarm = Alarm(k=3, n=5)
        assert feed(alarm, "anan") == []
        assert feed(alarm, "a") == ["alarm"]

    def test_clears_only_when_none_of_last_n_are_anomalous(self) -> None:
        """Hysteresis: the alarm holds until n normal windows in a row."""
        alarm = Alarm(k=2, n=3)
        assert feed(alarm, "aa") == ["alarm"]
        assert feed(alarm, "nn") == []
        assert feed(alarm, "n") == ["clear"]

    def test_one_anomaly_among_normals_does_not_flap(self) -> None:
        """A lone anomalous window under k never raises the alarm."""
        alarm = Alarm(k=2, n=4)
        assert feed(alarm, "nnnannnnannn") == []

    def test_unusable_windows_are_ignored(self) -> None:
        """Windows from a faulty sensor neither raise nor clear."""
        alarm = Alarm(k=1, n=2)
        assert feed(alarm, "aaaa", usable=False) == []
        assert alarm.state == "clear"

    def test_change_payload(self) -> None:
        """The change carries state, since, k, n and the triggering score; seq 0 until the
        pipeline gives it the triggering verdict's (with_seq), and not replayed."""
        alarm = Alarm(k=1, n=1)
        change = alarm.update(
            anomalous=True, usable=True, score=0.75, at="2026-01-01T00:00:00.000Z"
        )
        assert change is not None
        assert change.payload() == {
            "state": "alarm",
            "since": "2026-01-01T00:00:00.000Z",
            "k": 1,
            "n": 1,
            "score": 0.75,
            "seq": 0,
            "replayed": False,
        }

    def test_resumes_a_standing_alarm(self) -> None:
        """A restarted daemon that was in alarm reports clear after n normal windows."""
        alarm = Alarm(k=2, n=2, state="alarm")
        assert feed(alarm, "nn") == ["clear"]

    def test_rejects_k_above_n(self) -> None:
        """k must not exceed n."""
        with pytest.raises(ValueError, match="k <= n"):
            Alarm(k=3, n=2)


class TestReconfigured:
    def test_a_standing_alarm_and_recent_labels_carry_over(self) -> None:
        """A reload's new k of n keeps the state and the newest n labels: the alarm clears only
        after n normal windows under the new rule, not at once and not never."""
        alarm = Alarm(k=1, n=2)
        assert alarm.update(anomalous=True, usable=True, score=0.9, at="t0") is not None
        resized = alarm.reconfigured(k=2, n=3)
        assert (resized.state, resized.k, resized.n) == ("alarm", 2, 3)
        changes = [
            resized.update(anomalous=False, usable=True, score=0.1, at=f"t{i}") for i in (1, 2, 3)
        ]
        assert [c.state if c else None for c in changes] == [None, None, "clear"]

    def test_a_shorter_n_keeps_only_the_newest_labels(self) -> None:
        alarm = Alarm(k=3, n=5)
        for anomalous in (True, True, False, False):
            alarm.update(anomalous=anomalous, usable=True, score=0.5, at="t")
        resized = alarm.reconfigured(k=1, n=2)
        assert resized.state == "clear"
        # The two newest are normal: one anomalous window raises it (k=1).
        change = resized.update(anomalous=True, usable=True, score=0.9, at="t")
        assert change is not None
        assert change.state == "alarm"
