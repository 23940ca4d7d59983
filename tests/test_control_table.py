"""control.table and control.view: the table is a pure function of node views and the time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from control.table import CLOCK_AHEAD, NO_HEALTH, STALE, render_table
from control.view import CLOCK_AHEAD_TOLERANCE_S, NodeView
from tests.watch_output import row

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def healthy(view: NodeView) -> NodeView:
    """view with a health report received (capture running, empty outbox)."""
    return replace(view, has_health=True, capture="running", outbox_depth=0)


class TestRenderTable:
    def test_rows_show_every_column(self) -> None:
        """A node's row shows status, label, score, modulation, age, alarm, capture and outbox."""
        view = NodeView(
            node="t1", status="online", label="anomalous", score=0.9312, mod_db=18.26, line_hz=50,
            seq=4, verdict_end=NOW - timedelta(seconds=12), received=NOW, source="live",
            alarm="alarm", has_health=True, capture="running", outbox_depth=3,
        )  # fmt: skip
        table = render_table([view], NOW, prefix="corona/v1")
        assert table.splitlines()[0].startswith("corona-control watch  corona/v1  2026-11-25T12")
        assert row(table, "NODE") == [
            "NODE", "STATUS", "VERDICT", "SCORE", "MOD2F", "AGE", "ALARM", "CAPTURE", "OUTBOX",
        ]  # fmt: skip
        assert row(table, "t1") == [
            "t1", "online", "anomalous", "0.931", "18.3dB@50", "12s", "alarm", "running", "3",
        ]  # fmt: skip

    def test_stale_after_two_default_windows(self) -> None:
        """Without a window length from health, a verdict older than 2 x 30 s is STALE."""
        fresh = NodeView(node="a", label="normal", verdict_end=NOW - timedelta(seconds=59))
        old = NodeView(node="b", label="normal", verdict_end=NOW - timedelta(seconds=61))
        table = render_table([fresh, old], NOW)
        assert STALE not in row(table, "a")
        assert row(table, "b")[-1] == STALE
        assert row(table, "b")[5] == "1m01s"

    def test_stale_uses_window_length_from_health(self) -> None:
        """A node reporting 5 s windows is stale after 10 s; one reporting 600 s is not."""
        short = NodeView(node="s", verdict_end=NOW - timedelta(seconds=11), window_s=5.0)
        long = NodeView(node="l", verdict_end=NOW - timedelta(seconds=900), window_s=600.0)
        table = render_table([short, long], NOW)
        assert row(table, "s")[-1] == STALE
        assert STALE not in row(table, "l")

    def test_a_huge_window_length_does_not_break_the_table(self) -> None:
        """window_s 1e300 from a hostile health report: never stale, no overflow."""
        view = NodeView(node="h", verdict_end=NOW - timedelta(days=3), window_s=1e300)
        assert STALE not in row(render_table([view], NOW), "h")

    def test_node_without_verdict_or_health(self) -> None:
        """A node known only from its status is stale and says it never sent health."""
        table = render_table([NodeView(node="x", status="offline")], NOW)
        assert row(table, "x") == ["x", "offline", "-", "-", "-", "-", "-", NO_HEALTH, "-", STALE]

    def test_health_shows_capture_and_outbox(self) -> None:
        """Once health arrived, CAPTURE and OUTBOX come from it."""
        view = healthy(NodeView(node="x", status="online"))
        assert row(render_table([view], NOW), "x")[7:9] == ["running", "0"]

    def test_empty_table_says_so(self) -> None:
        """No node yet: the header and a note, not an empty screen."""
        assert "no node has published yet" in render_table([], NOW)

    def test_footer_counts_skipped_messages(self) -> None:
        """Skipped messages are counted in one footer line, by reason; none: no footer."""
        table = render_table([], NOW, skipped={"invalid": 2, "too large": 1})
        assert table.splitlines()[-1] == "skipped 3 invalid messages (invalid 2, too large 1)"
        assert "skipped" not in render_table([], NOW, skipped={})


class TestReplayNodes:
    def test_replay_is_never_stale_and_shows_its_file_position(self) -> None:
        """A replay's window times count from 1970: AGE is the file and offset, not 56 years."""
        view = NodeView(
            node="r", label="normal", verdict_end=EPOCH + timedelta(seconds=42), received=NOW,
            source="replay", file="/data/recordings/clip.wav", offset_s=12.0,
        )  # fmt: skip
        replay_row = row(render_table([view], NOW), "r")
        assert replay_row[5] == "clip.wav@12.0s"
        assert replay_row[7:] == [NO_HEALTH, "-"]  # and no flags column: not STALE

    def test_replay_without_file_fields(self) -> None:
        """A replay verdict missing file and offset_s still says it is a replay."""
        view = NodeView(node="r", verdict_end=EPOCH, source="replay")
        assert row(render_table([view], NOW), "r")[5] == "replay"

    def test_replay_file_name_is_escaped_and_bounded(self) -> None:
        """The file name is the publisher's text too: escaped, cut, the offset kept."""
        view = NodeView(
            node="r", verdict_end=EPOCH, source="replay", file="\x1b[2J" + "x" * 5000 + ".wav",
            offset_s=1e308,
        )  # fmt: skip
        age = row(render_table([view], NOW), "r")[5]
        assert "\x1b" not in age
        assert age.startswith("\\x1b[2J")
        assert len(age) < 50


class TestClockAhead:
    def future(self, ahead_s: float, received: datetime = NOW) -> NodeView:
        return NodeView(
            node="f", label="normal", verdict_end=NOW + timedelta(seconds=ahead_s),
            received=received, source="live",
        )  # fmt: skip

    def test_window_end_in_the_future_is_flagged(self) -> None:
        """A verdict an hour ahead of our clock: CLOCK?, its age shown negative."""
        flagged = row(render_table([self.future(3600)], NOW), "f")
        assert flagged[5] == "-1h00m"
        assert flagged[-1] == CLOCK_AHEAD

    def test_within_the_tolerance_is_not_flagged(self) -> None:
        """A clock a few seconds fast is normal: no flag, not stale."""
        view = self.future(CLOCK_AHEAD_TOLERANCE_S - 1)
        assert len(row(render_table([view], NOW), "f")) == 9  # no flags column

    def test_future_verdict_goes_stale_by_its_arrival(self) -> None:
        """A far-future window_end does not keep a silent node fresh forever."""
        view = self.future(86400 * 365, received=NOW - timedelta(seconds=61))
        assert row(render_table([view], NOW), "f")[-1] == f"{STALE},{CLOCK_AHEAD}"
