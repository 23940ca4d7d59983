"""daemon.deliver.sinks: every Sink on a real outbox file, with typed verdicts and alarm changes.

The seq is stamped in the outbox transaction: the verdict a sink returns and the row it stored
carry the same seq, and the stored bytes are exactly that verdict's JSON."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from daemon import schemas
from daemon.analyse import verdict
from daemon.analyse.alarm import AlarmChange
from daemon.analyse.verdict import Verdict
from daemon.constants import SAMPLE_RATE
from daemon.deliver.outbox import Outbox
from daemon.deliver.sinks import (
    ALARM_STATE_KEY,
    EchoSink,
    NumberOnlySink,
    OutboxSink,
    RememberAlarm,
)
from daemon.listen.windows import windows_of


def _verdict() -> Verdict:
    samples = 0.05 * np.random.default_rng(3).standard_normal(SAMPLE_RATE).astype(np.float32)
    return verdict.build(
        node="n1",
        window=windows_of(samples, length_s=1.0)[0],
        stream_start=datetime(2026, 12, 1, tzinfo=UTC),
        score=0.3,
        threshold=0.5,
        model=verdict.ModelRef("m", "c" * 64),
        overflows=0,
        source="live",
    )


ALARM = AlarmChange("alarm", "2026-12-01T00:00:03.000Z", 3, 5, 0.9)


class TestOutboxSink:
    def test_seq_stamped_in_the_stored_row(self, tmp_path: Path) -> None:
        """Verdicts get consecutive seqs in order; the alarm between them is stored retained
        without a seq; each row's bytes are the returned message's JSON, schema-valid."""
        with Outbox(tmp_path / "o.sqlite") as box:
            sink = OutboxSink(box, qos=1)
            first = sink.store(_verdict())
            alarm = sink.store(ALARM)
            second = sink.store(_verdict())
            rows = box.pending(10)
        assert isinstance(first, Verdict)
        assert isinstance(second, Verdict)
        assert second.seq == first.seq + 1
        assert alarm is ALARM
        assert [(r.topic, r.seq, r.qos, r.retain) for r in rows] == [
            ("verdict", first.seq, 1, False),
            ("alarm", None, 1, True),
            ("verdict", second.seq, 1, False),
        ]
        assert rows[0].payload == first.to_json()
        schemas.validate("verdict", json.loads(rows[2].payload))
        schemas.validate("alarm", json.loads(rows[1].payload))


class TestNumberOnlySink:
    def test_numbers_and_keeps_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            sink = NumberOnlySink(box)
            seqs = [sink.store(_verdict()).seq for _ in range(3)]
            assert sink.store(ALARM) is ALARM
            assert box.depth() == 0
        with Outbox(path) as box:  # the counter survives a restart
            again = NumberOnlySink(box).store(_verdict())
        assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
        assert isinstance(again, Verdict)
        assert again.seq == seqs[0] + 3


class TestWrappers:
    def test_echo_prints_each_verdict_with_its_seq(self, tmp_path: Path) -> None:
        out = io.StringIO()
        with Outbox(tmp_path / "o.sqlite") as box:
            sink = EchoSink(NumberOnlySink(box), out)
            sink.store(_verdict())
            sink.store(ALARM)
            sink.store(_verdict())
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert len(lines) == 2  # alarms are not echoed
        assert lines[1]["seq"] == lines[0]["seq"] + 1

    def test_remember_alarm_records_the_state(self, tmp_path: Path) -> None:
        with Outbox(tmp_path / "o.sqlite") as box:
            sink = RememberAlarm(OutboxSink(box), box)
            sink.store(_verdict())
            assert box.get_state(ALARM_STATE_KEY, default=-1) == -1
            sink.store(ALARM)
            assert box.get_state(ALARM_STATE_KEY) == 1
            sink.store(AlarmChange("clear", "t", 3, 5, 0.1))
            assert box.get_state(ALARM_STATE_KEY) == 0
