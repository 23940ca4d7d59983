"""Hostile node ids and fields through the web API: never markup, never a crash, never lost.

A publisher chooses its topic level (the node id) and most strings of its payloads. Whatever it
chose passed the collector's gate (schema-valid) and sits in the store; the API must return it
as JSON text only: ASCII, `<`/`>`/`&` escaped, with nosniff, and the exact value after parsing
(the page shows it with textContent). The pages themselves are static: no node text is in them.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import pytest

from control.store.records import Record
from control.web.fleet import LABEL_CELLS
from tests.control_fleet import health_doc, health_record, status_record, verdict_record
from tests.fixtures.control_web import Client, Web
from tests.watch_messages import verdict_doc

SCRIPT: Final = "<script>alert(1)</script>"
IMG: Final = '"><img src=x onerror=alert(1)>'
NODES: Final = {
    "img": IMG,
    "svg": "<svg onload=alert(1)>",
    "escapes": "tower\x1b[2J\x1b]0;title\x07",
    "rtl": "\u202etower-0001",
    "zero-width": "tower\u200b-0001",
    "newline": "tower-0009\ntower-0001 online clear",
    "formula": "@SUM(A1)",
    "long": "x" * 10_000,
    "unicode": "Umspannwerk-Süd-🗼",
}
"""Node ids valid on a topic (no /, + or #) and to the schema, each an attack on a display."""
FIELDS: Final[dict[str, Any]] = {
    "sensor": SCRIPT,
    "model": {"name": IMG, "sha256": "ab" * 32},
    "note": "lone \ud800 surrogate",
    "file": f"/recordings/{SCRIPT}.wav".replace("/script", "_script"),
    "long_text": "L" * 10_000,
}
"""Fields of a verdict a publisher controls (the schema admits extra fields)."""


def hostile_records(now: float) -> list[Record]:
    records: list[Record] = []
    moment = datetime.fromtimestamp(now, UTC)
    for i, node in enumerate(NODES.values()):
        doc = verdict_doc(node, i, moment, **FIELDS)
        # As published: the daemon's json.dumps is ASCII (the surrogate as \ud800); another
        # publisher may send raw UTF-8 behind a byte order mark.
        if i % 2:
            text = json.dumps(doc)
        else:
            raw = json.dumps(doc, ensure_ascii=False).replace("\ud800", "\\ud800")
            text = "\ufeff" + raw
        records.append(verdict_record(doc, now, payload=text))
        records.append(status_record(node, SCRIPT + "\x1b[2J", now))
        health = health_doc(outbox="degraded", outbox_error=SCRIPT)
        records.append(health_record(node, health, now))
    return records


@pytest.fixture
def op(web: Web) -> Client:
    web.store.write(hostile_records(web.clock()))
    return web.logged_in()


def assert_inert_json(body: bytes) -> Any:
    """The body is ASCII JSON in which no byte could open a tag or an entity."""
    assert body.isascii()
    for char in b"<>&":
        assert bytes([char]) not in body
    return json.loads(body)


class TestApi:
    def test_the_fleet_returns_every_value_exactly_and_inertly(self, op: Client) -> None:
        reply = op.get("/api/nodes")
        assert reply.status == 200
        assert reply.header("Content-Type") == "application/json; charset=utf-8"
        assert reply.header("X-Content-Type-Options") == "nosniff"
        rows = {row["node"]: row for row in assert_inert_json(reply.body)}
        assert set(rows) == set(NODES.values())
        for row in rows.values():
            assert row["status"] == SCRIPT + "\x1b[2J"
            assert row["last_verdict"]["sensor"] == SCRIPT
            assert row["last_verdict"]["model"]["name"] == IMG
            assert row["last_verdict"]["note"] == "lone \ud800 surrogate"
            assert row["last_health"]["outbox_error"] == SCRIPT

    def test_labels_are_bounded_and_show_what_hides(self, op: Client) -> None:
        """A node's label (what the page shows) is at most LABEL_CELLS characters and holds
        no control or format character: an RTL override or zero-width space shows as its
        escape, so a lookalike cannot pass for tower-0001."""
        rows = {r["node"]: r for r in op.get("/api/nodes").json()}
        for node, row in rows.items():
            label = row["label"]
            assert len(label) <= LABEL_CELLS
            assert label.isprintable(), label
            assert label.removesuffix("…").isascii(), label
            if node != "tower-0001":
                assert label != "tower-0001"
        assert rows[NODES["rtl"]]["label"] == "?\\u202etower-0001"
        assert rows[NODES["zero-width"]]["label"] == "?tower\\u200b-0001"
        assert rows[NODES["newline"]]["label"].startswith("?tower-0009\\x0atower-0001")
        assert rows[NODES["long"]]["label"].endswith("…")

    @pytest.mark.parametrize("key", list(NODES))
    def test_each_nodes_calls_by_its_percent_encoded_name(self, op: Client, key: str) -> None:
        """/api/nodes/{node}/... with the id percent-encoded as encodeURIComponent does."""
        node = NODES[key]
        path = "/api/nodes/" + quote(node, safe="")
        one = op.get(path)
        assert one.status == 200
        assert assert_inert_json(one.body)["node"] == node
        verdicts = op.get(path + "/verdicts")
        assert verdicts.status == 200
        docs = assert_inert_json(verdicts.body)
        assert [d["node"] for d in docs] == [node]
        assert docs[0]["sensor"] == SCRIPT
        assert docs[0]["long_text"] == "L" * 10_000
        for tail in ("/series", "/gaps", "/alarms", "/health"):
            assert_inert_json(op.get(path + tail).body)

    def test_a_node_page_holds_no_node_text(self, op: Client) -> None:
        """/nodes/{any node} is the same static file: nothing of the id is written into it."""
        plain = op.get("/nodes/tower-0001")
        assert plain.header("Content-Type") == "text/html; charset=utf-8"
        for node in NODES.values():
            page = op.get("/nodes/" + quote(node, safe=""))
            assert page.status == 200
            assert page.body == plain.body

    def test_the_csv_keeps_each_id_in_its_cell(self, op: Client) -> None:
        """A newline in an id stays inside its quoted cell (no forged row); a formula is
        defused; the file is UTF-8."""
        table = list(csv.reader(io.StringIO(op.get("/api/export.csv").body.decode("utf-8"))))
        assert len(table) == 1 + len(NODES)
        ids = {row[0] for row in table[1:]}
        assert "'@SUM(A1)" in ids
        assert NODES["newline"] in ids
        assert NODES["unicode"] in ids

    def test_a_parameter_name_comes_back_inert(self, op: Client) -> None:
        """The 400 names the unknown parameter: as escaped JSON text."""
        reply = op.get("/api/nodes?" + quote(SCRIPT) + "=1")
        assert reply.status == 400
        assert assert_inert_json(reply.body)["error"].startswith("<script>")

    @pytest.mark.parametrize("segment", ["a%2Fb", "a%2Bb", "a%23b", "a%00b", ""])
    def test_ids_no_node_can_have_are_404(self, op: Client, segment: str) -> None:
        assert op.get(f"/api/nodes/{segment}/verdicts").status == 404


class TestStoredOddities:
    def test_deeply_nested_extra_fields_are_served(self, web: Web) -> None:
        """A verdict whose extra field nests 500 levels (the gate's parser took it)."""
        nested: Any = "deep"
        for _ in range(500):
            nested = [nested]
        doc = verdict_doc("nest", 0, datetime.fromtimestamp(web.clock(), UTC), extra=nested)
        web.store.write([verdict_record(doc, web.clock())])
        client = web.logged_in()
        assert client.get("/api/nodes").json()[0]["last_verdict"]["extra"] == nested
        assert client.get("/api/nodes/nest/verdicts").json() == [doc]

    def test_an_infinite_level_is_null_not_a_crash(self, web: Web) -> None:
        """1e400 is valid JSON and parses to inf; the API's own numbers become null."""
        doc = verdict_doc("loud", 0, datetime.fromtimestamp(web.clock(), UTC), level_dbfs=1e400)
        text = json.dumps(doc).replace("Infinity", "1e400")
        web.store.write([verdict_record(doc, web.clock(), payload=text)])
        client = web.logged_in()
        start, end = "1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
        series = client.get(f"/api/nodes/loud/series?from={start}&to={end}&points=3")
        assert series.status == 200
        assert series.json()["points"][0]["level_dbfs"] is None
        assert client.get("/api/nodes").status == 200
        assert client.get("/api/export.csv").status == 200
