"""The evidence calls over real HTTP: windows with clips, clip requests and states, the audio,
labels; what each refuses. (The whole round trip with a node and a browser is in
test_control_browser.py; the collector's side in test_control_clips.py.)"""

from __future__ import annotations

from urllib.parse import quote

from control.store.records import ClipIn
from tests.control_records import RECEIVED, verdict_in
from tests.fixtures.control_web import USER, WebFactory

NODE = "tower-e"
CLIP = "tower-e_5_20261125T120000000Z_anomalous.flac"


def test_windows_list_the_clips_their_state_and_the_label(web_factory: WebFactory) -> None:
    asked: list[tuple[str, str, str]] = []
    web = web_factory(request_clip=lambda *a: asked.append(a))
    web.store.write(
        [verdict_in(NODE, 4), verdict_in(NODE, 5, label="anomalous", score=0.9, clip=CLIP)]
    )
    client = web.logged_in()
    (window,) = client.get(f"/api/nodes/{NODE}/windows").json()
    assert (window["seq"], window["clip"], window["clip_state"], window["person"]) == (
        5,
        CLIP,
        None,
        None,
    )
    assert client.get(f"/api/nodes/{NODE}/clips/{CLIP}").status == 404  # never asked for

    reply = client.post(f"/api/nodes/{NODE}/clips/{CLIP}/request")
    assert reply.status == 202
    assert asked == [(NODE, CLIP, USER)]
    web.store.request_clip(NODE, CLIP, 5, user=USER, at=RECEIVED)  # what the collector records
    assert client.get(f"/api/nodes/{NODE}/clips/{CLIP}").json()["state"] == "pending"
    assert client.get(f"/api/nodes/{NODE}/clips/{CLIP}/audio").status == 404

    web.store.write([ClipIn(NODE, CLIP, 5, b"fLaC-bytes", RECEIVED)])
    audio = client.get(f"/api/nodes/{NODE}/clips/{CLIP}/audio")
    assert (audio.status, audio.body, audio.header("Content-Type")) == (
        200,
        b"fLaC-bytes",
        "audio/flac",
    )
    labelled = client.post(
        f"/api/nodes/{NODE}/verdicts/5/label", {"label": "normal", "note": "<b>crow</b>"}
    )
    assert labelled.json()["labelled_by"] == USER
    (window,) = client.get(f"/api/nodes/{NODE}/windows").json()
    assert window["clip_state"]["state"] == "stored"
    assert window["person"]["note"] == "<b>crow</b>"


def test_what_the_evidence_calls_refuse(web_factory: WebFactory) -> None:
    web = web_factory()  # no collector behind it
    web.store.write([verdict_in(NODE, 5, clip=CLIP)])
    client = web.logged_in()
    assert client.post(f"/api/nodes/{NODE}/clips/{CLIP}/request").status == 503
    for bad in ("..%2F..%2Fetc%2Fpasswd", quote("x.flac"), CLIP.replace("tower-e", "other")):
        assert client.get(f"/api/nodes/{NODE}/clips/{bad}").status == 404, bad
        assert client.post(f"/api/nodes/{NODE}/clips/{bad}/request").status == 404, bad
    assert client.post(f"/api/nodes/{NODE}/verdicts/5/label", {"label": "corona"}).status == 400
    assert client.post(f"/api/nodes/{NODE}/verdicts/x/label", {"label": "normal"}).status == 400
    assert client.post("/api/nodes/nobody/verdicts/5/label", {"label": "normal"}).status == 404
    assert web.client().get(f"/api/nodes/{NODE}/windows").status == 401
    no_csrf = client.post(f"/api/nodes/{NODE}/verdicts/5/label", {"label": "normal"}, csrf="x")
    assert no_csrf.status == 403
    assert web.store.labels() == []


def test_a_wall_display_labels_and_fetches_nothing(web_factory: WebFactory) -> None:
    web = web_factory(auth="none")
    web.store.write([verdict_in(NODE, 5, clip=CLIP)])
    client = web.client()
    assert client.get(f"/api/nodes/{NODE}/windows").status == 200
    assert client.post(f"/api/nodes/{NODE}/verdicts/5/label", {"label": "normal"}).status == 403
    assert client.post(f"/api/nodes/{NODE}/clips/{CLIP}/request").status == 403


def test_a_wall_display_answers_only_hosts_it_knows(web_factory: WebFactory) -> None:
    """Without logins, a page on another site that rebinds its own name to this address gets
    nothing: only IP addresses, localhost and http.hosts are served."""
    web = web_factory(auth="none", hosts=("wall.example",))
    client = web.client()
    for host, status in (
        (f"127.0.0.1:{web.port}", 200),
        (f"localhost:{web.port}", 200),
        (f"[::1]:{web.port}", 200),
        ("wall.example", 200),
        ("evil.example", 421),
        ("127.0.0.1.evil.example", 421),
        ("", 421),
    ):
        assert client.get("/api/nodes", headers={"Host": host}).status == status, host


def test_with_logins_any_host_name_may_open_the_page(web_factory: WebFactory) -> None:
    web = web_factory()  # cookies are per host: a rebinding page has no session there
    assert web.client().get("/login", headers={"Host": "control.utility.lan"}).status == 200
