"""daemon.deliver.publish against a real mosquitto: status and Last Will, acks, reconnects, TLS and
auth."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from daemon import log as daemon_log
from daemon import schemas
from daemon.config import MqttSettings, TlsSettings
from daemon.deliver.publish import KINDS, Publisher, parse_topic, topics
from daemon.errors import ConfigError
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker, Subscriber, TlsFiles

REPO = Path(__file__).resolve().parent.parent
NODE = "tower-7"
PREFIX = "corona/v1"
BARRIER = "test-barrier"
T = topics(PREFIX, NODE)
SECRET = "s3cr3t-Pa55word-xyzzy"
ACK_TIMEOUT_S = 10.0
SHA = "ab" * 32

ACL = f"""topic read {BARRIER}/#
user tower
topic readwrite {PREFIX}/#
user control
topic read {PREFIX}/#
topic write {BARRIER}/#
"""
"""Named users only on the node's topics: an anonymous client may read nothing but the barrier
topic (the lines before the first `user`), which `control` writes to prove a delivery order."""

Make = Callable[..., Publisher]


def publish_barrier(
    broker: Broker, *, username: str | None = None, password: str | None = None
) -> None:
    """Publish `BARRIER/mark` (QoS 1) and wait for the broker's ack. A subscriber that then
    receives it has been sent everything the broker processed before: its messages arrive in
    order, so "nothing else came" is proved by an event, not by a pause."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    if username is not None:
        client.username_pw_set(username, password)
    if broker.tls is not None:
        client.tls_set(ca_certs=str(broker.tls.ca))
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        info = client.publish(f"{BARRIER}/mark", b"barrier", qos=1)
        info.wait_for_publish(ACK_TIMEOUT_S)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def verdict(seq: int) -> dict[str, Any]:
    return {
        "schema": 1,
        "node": NODE,
        "seq": seq,
        "window_start": "2026-11-25T04:53:06.536Z",
        "window_end": "2026-11-25T04:53:36.536Z",
        "label": "normal",
        "score": 0.12,
        "threshold": 0.5,
        "model": {"name": "corona-demo", "sha256": SHA},
        "level_dbfs": -40.0,
        "clipped": 0.0,
        "overflows": 0,
        "source": "live",
        "replayed": False,
    }


def plain(broker: Broker, **options: Any) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, reconnect_max_s=1.0, **options)


@pytest.fixture
def publisher() -> Iterator[Make]:
    """publisher(settings, node=NODE, start=True) -> a Publisher closed at teardown."""
    made: list[Publisher] = []

    def make(settings: MqttSettings, node: str = NODE, *, start: bool = True) -> Publisher:
        pub = Publisher(settings, node)
        made.append(pub)
        if start:
            pub.start()
        return pub

    yield make
    for pub in made:
        pub.close(timeout_s=0.5)


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Everything this process logs through structlog at debug level, as JSON lines."""
    buffer = io.StringIO()
    daemon_log.configure(level="debug", fmt="json", node_id=NODE, stream=buffer)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def events(buffer: io.StringIO, name: str) -> list[dict[str, Any]]:
    found = []
    for line in buffer.getvalue().splitlines():
        record = json.loads(line)
        if record["event"] == name:
            found.append(record)
    return found


def wait_retained_status(sub: Subscriber, value: str) -> None:
    """Wait until the broker is seen holding `value` retained on the status topic; an
    AssertionError (from wait_for) when it does not within the timeout.

    A subscription made right after connect can beat the client's publish of `online` and get
    it live (retain false); then a second, later subscriber must get it retained.
    """
    first = sub.wait_for(lambda m: m.topic == T.status and m.text == value)
    if first.retain:
        return
    later = Subscriber(sub.broker, sub.topic_filter, sub.username, sub.password, sub.ca)
    try:
        later.wait_for(lambda m: m.topic == T.status and m.retain and m.text == value)
    finally:
        later.close()


class TestTopics:
    def test_parse_is_the_inverse_of_topics(self) -> None:
        """Every node topic parses back to (node, kind); anything else is not a node message."""
        t = topics("corona/v1", "n1")
        assert [parse_topic("corona/v1/", x) for x in (t.status, t.verdict, t.alarm, t.health)] == [
            ("n1", k) for k in KINDS
        ]
        for other in ("corona/v1/n1", "corona/v1//verdict", "corona/v1/n1/verdict/x",
                      "corona/v2/n1/verdict", "corona/v1/n1/metrics"):  # fmt: skip
            assert parse_topic("corona/v1", other) is None

    def test_topics_follow_the_design(self) -> None:
        """The four topics are {prefix}/{node}/status|verdict|alarm|health."""
        t = topics("corona/v1/", "n1")
        assert (t.status, t.verdict, t.alarm, t.health) == (
            "corona/v1/n1/status",
            "corona/v1/n1/verdict",
            "corona/v1/n1/alarm",
            "corona/v1/n1/health",
        )


class TestStatus:
    def test_online_is_retained_on_connect(
        self, broker: Broker, publisher: Make, subscribe: Callable[..., Subscriber]
    ) -> None:
        """After connecting, a newcomer reads `online` retained at QoS 1 on the status topic."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        sub = subscribe(broker, T.status)
        message = sub.wait_for(lambda m: m.text == "online")
        assert message.qos == 1
        # It may come live when the subscription beat the publish; then a later one reads it.
        wait_retained_status(sub, "online")

    def test_stopped_is_retained_after_clean_close(
        self, broker: Broker, publisher: Make, subscribe: Callable[..., Subscriber]
    ) -> None:
        """close() leaves `stopped` retained, not the Last Will `offline`."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        live = subscribe(broker, "#")
        assert live.wait_subscribed()
        pub.close()
        assert not pub.connected
        wait_retained_status(subscribe(broker, T.status), "stopped")
        # A Will `offline` would be sent at the disconnect, so before a barrier published after it.
        publish_barrier(broker)
        live.on(f"{BARRIER}/mark")
        # `online` may also arrive live when the subscription beat its publish; never `offline`.
        live_texts = [m.text for m in live.messages if m.topic == T.status and not m.retain]
        assert live_texts[-1:] == ["stopped"]
        assert "offline" not in live_texts

    def test_last_will_offline_after_sigkill(
        self, broker: Broker, subscribe: Callable[..., Subscriber]
    ) -> None:
        """A publisher process killed with SIGKILL leaves `offline` retained (the Last Will)."""
        script = (
            "import sys, time\n"
            "from daemon import log\n"
            "from daemon.config import MqttSettings\n"
            "from daemon.deliver.publish import Publisher\n"
            "log.configure(stream=sys.stderr)\n"
            "p = Publisher(MqttSettings(host=sys.argv[1], port=int(sys.argv[2])), sys.argv[3])\n"
            "p.start()\n"
            "assert p.wait_connected(10)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        live = subscribe(broker, T.status)
        child = subprocess.Popen(
            [sys.executable, "-c", script, broker.host, str(broker.port), NODE],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
            live.wait_for(lambda m: m.text == "online")
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        wait_retained_status(subscribe(broker, T.status), "offline")


class TestPublish:
    def test_qos1_verdict_is_delivered_and_acked_once(
        self, broker: Broker, publisher: Make, subscribe: Callable[..., Subscriber]
    ) -> None:
        """A QoS 1 verdict arrives intact and schema-valid, and on_ack runs exactly once."""
        sub = subscribe(broker, T.verdict)
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        acks: list[int] = []
        acked = threading.Event()

        def on_ack() -> None:
            acks.append(1)
            acked.set()

        payload = json.dumps(verdict(1)).encode()
        mid = pub.publish("verdict", payload, qos=1, on_ack=on_ack)
        assert isinstance(mid, int)
        assert acked.wait(ACK_TIMEOUT_S)
        message = sub.on(T.verdict)
        assert message.payload == payload
        assert (message.qos, message.retain) == (1, False)
        schemas.validate("verdict", message.payload)
        # The broker acknowledges one connection's publishes in order: once a second one is
        # acknowledged, a duplicate ack of the first would already have arrived.
        second = threading.Event()
        pub.publish("verdict", json.dumps(verdict(2)).encode(), qos=1, on_ack=second.set)
        assert second.wait(ACK_TIMEOUT_S)
        assert acks == [1]
        assert not pub.is_pending(mid)
        assert pub.pending_count == 0

    def test_every_ack_arrives_under_a_burst(self, broker: Broker, publisher: Make) -> None:
        """500 QoS 1 publishes from two threads each get their on_ack once (acks may race mids)."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        lock = threading.Lock()
        acked: list[int] = []
        mids: list[int | None] = []

        def burst(first: int) -> None:
            for i in range(first, first + 250):

                def on_ack(i: int = i) -> None:
                    with lock:
                        acked.append(i)

                mids.append(pub.publish("verdict", f"{i}", qos=1, on_ack=on_ack))

        threads = [threading.Thread(target=burst, args=(n,)) for n in (0, 250)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert None not in mids
        wait_until(lambda: len(acked) == 500, "500 acks", timeout_s=ACK_TIMEOUT_S)
        assert sorted(acked) == list(range(500))
        assert pub.pending_count == 0

    def test_qos0_ack_means_sent(self, broker: Broker, publisher: Make) -> None:
        """For QoS 0, on_ack runs once the message has left the client."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        sent = threading.Event()
        assert pub.publish("health", b"{}", qos=0, on_ack=sent.set) is not None
        assert sent.wait(ACK_TIMEOUT_S)

    def test_retained_publish_is_retained(
        self, broker: Broker, publisher: Make, subscribe: Callable[..., Subscriber]
    ) -> None:
        """retain=True leaves the alarm state for subscribers that come later."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        alarm = {"state": "alarm", "since": "2026-11-25T04:53:36.536Z", "k": 3, "n": 5, "score": 1}
        acked = threading.Event()
        pub.publish("alarm", json.dumps(alarm), qos=1, retain=True, on_ack=acked.set)
        assert acked.wait(ACK_TIMEOUT_S)
        message = subscribe(broker, T.alarm).on(T.alarm)
        assert message.retain
        schemas.validate("alarm", message.payload)

    def test_failing_callback_does_not_stop_delivery(self, broker: Broker, publisher: Make) -> None:
        """An on_ack that raises is logged; later acks still arrive."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)

        def broken() -> None:
            raise RuntimeError("callback bug")

        pub.publish("verdict", b"1", qos=1, on_ack=broken)
        later = threading.Event()
        pub.publish("verdict", b"2", qos=1, on_ack=later.set)
        assert later.wait(ACK_TIMEOUT_S)

    def test_publish_while_disconnected_hands_nothing_over(
        self, broker_factory: Callable[..., Broker], publisher: Make
    ) -> None:
        """Without a connection publish() returns None at once: the caller keeps the message."""
        down = broker_factory(start=False)
        pub = publisher(plain(down))
        started = time.monotonic()
        assert pub.publish("verdict", b"x", qos=1, on_ack=lambda: None) is None
        assert time.monotonic() - started < 0.5
        assert pub.pending_count == 0


class TestReconnect:
    def test_online_again_after_broker_restart(
        self, broker: Broker, publisher: Make, subscribe: Callable[..., Subscriber]
    ) -> None:
        """The broker restarts (retained messages gone); the client reconnects and says online."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        broker.stop()
        wait_until(
            lambda: not pub.connected, "the lost connection noticed", timeout_s=ACK_TIMEOUT_S
        )
        broker.start()
        assert pub.wait_connected(ACK_TIMEOUT_S)
        wait_retained_status(subscribe(broker, T.status), "online")
        acked = threading.Event()
        assert pub.publish("verdict", b"after", qos=1, on_ack=acked.set) is not None
        assert acked.wait(ACK_TIMEOUT_S)

    def test_unreachable_at_start_then_connects(
        self, broker_factory: Callable[..., Broker], publisher: Make, log_text: io.StringIO
    ) -> None:
        """A broker missing at start is logged once, retried, and used once it appears."""
        broker = broker_factory(start=False)
        pub = publisher(plain(broker))
        # Several failed attempts (1 s backoff) must still be one log line.
        wait_until(lambda: pub.connect_failures >= 3, "three failed connects")
        assert not pub.connected
        broker.start()
        assert pub.wait_connected(ACK_TIMEOUT_S)
        assert len(events(log_text, "mqtt_connect_failed")) == 1
        assert len(events(log_text, "mqtt_connected")) == 1


@pytest.fixture
def secure_broker(broker_factory: Callable[..., Broker], tls_files: TlsFiles) -> Broker:
    """TLS on the loopback port, a password file with `tower` and `control`, and an ACL."""
    return broker_factory(tls=tls_files, users={"tower": SECRET, "control": "control-pw"}, acl=ACL)


def secure(broker: Broker, tmp_path: Path, password: str = SECRET, **options: Any) -> MqttSettings:
    password_file = tmp_path / f"password-{abs(hash(password))}"
    password_file.write_text(password + "\n")
    assert broker.tls is not None
    return plain(
        broker,
        username="tower",
        password_file=password_file,
        tls=options.pop("tls", TlsSettings(ca=broker.tls.ca)),
        **options,
    )


class TestSecurity:
    def test_right_credentials_over_tls_publish(
        self,
        secure_broker: Broker,
        tmp_path: Path,
        publisher: Make,
        subscribe: Callable[..., Subscriber],
    ) -> None:
        """With the CA and the right password the verdict reaches an authorised reader."""
        assert secure_broker.tls is not None
        reader = subscribe(
            secure_broker, f"{PREFIX}/#", username="control", password="control-pw",
            ca=secure_broker.tls.ca,
        )  # fmt: skip
        pub = publisher(secure(secure_broker, tmp_path))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        acked = threading.Event()
        pub.publish("verdict", json.dumps(verdict(7)), qos=1, on_ack=acked.set)
        assert acked.wait(ACK_TIMEOUT_S)
        schemas.validate("verdict", reader.on(T.verdict).payload)
        assert reader.wait_for(lambda m: m.topic == T.status and m.text == "online")

    def test_anonymous_client_cannot_read(
        self,
        secure_broker: Broker,
        tmp_path: Path,
        publisher: Make,
        subscribe: Callable[..., Subscriber],
    ) -> None:
        """An anonymous TLS client sees nothing of the node's topics, retained or live."""
        assert secure_broker.tls is not None
        pub = publisher(secure(secure_broker, tmp_path))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        anonymous = subscribe(secure_broker, "#", ca=secure_broker.tls.ca)
        assert anonymous.wait_subscribed()
        reader = subscribe(
            secure_broker, f"{PREFIX}/#", username="control", password="control-pw",
            ca=secure_broker.tls.ca,
        )  # fmt: skip
        acked = threading.Event()
        pub.publish("verdict", json.dumps(verdict(8)), qos=1, on_ack=acked.set)
        assert acked.wait(ACK_TIMEOUT_S)
        reader.on(T.verdict)
        # The status may come retained or live (the subscription can beat `online`).
        reader.wait_for(lambda m: m.topic == T.status)
        publish_barrier(secure_broker, username="control", password="control-pw")
        anonymous.on(f"{BARRIER}/mark")  # everything before it was delivered, or denied
        assert [m.topic for m in anonymous.messages] == [f"{BARRIER}/mark"]

    def test_wrong_password_is_refused_clearly_and_retried(
        self,
        secure_broker: Broker,
        tmp_path: Path,
        publisher: Make,
        log_text: io.StringIO,
    ) -> None:
        """A wrong password: one clear error event, no crash, the client keeps retrying."""
        pub = publisher(secure(secure_broker, tmp_path, password="wrong-password"))
        assert not pub.wait_connected(3.5)
        refused = events(log_text, "mqtt_connection_refused")
        assert len(refused) == 1  # logged once, not once per retry
        assert refused[0]["level"] == "error"
        assert "password" in refused[0]["reason"].lower() or "author" in refused[0]["reason"]
        assert refused[0]["username"] == "tower"
        attempts = secure_broker.log_text().count("disconnected, not authorised")
        assert attempts >= 2, secure_broker.log_text()
        assert pub.publish("verdict", b"x") is None

    def test_client_certificate_is_presented(
        self,
        broker_factory: Callable[..., Broker],
        tls_files: TlsFiles,
        tmp_path: Path,
        publisher: Make,
    ) -> None:
        """With mqtt.tls.cert and key set, a broker that requires a client certificate accepts."""
        broker = broker_factory(
            tls=tls_files, users={"tower": SECRET}, acl=ACL, require_certificate=True
        )
        with_cert = TlsSettings(
            ca=tls_files.ca, cert=tls_files.client_cert, key=tls_files.client_key
        )
        pub = publisher(secure(broker, tmp_path, tls=with_cert))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        without = publisher(secure(broker, tmp_path), node="tower-8")
        assert not without.wait_connected(2.0)

    def test_a_server_that_accepts_and_closes_is_logged_once(
        self, publisher: Make, log_text: io.StringIO
    ) -> None:
        """A TCP server that accepts and closes at once (a TLS port, a proxy, a full broker): one
        warning naming host and port, failures counted, retries go on. Before: no line at all."""
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        stop = threading.Event()

        def accept_and_close() -> None:
            server.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                conn.close()

        thread = threading.Thread(target=accept_and_close)
        thread.start()
        try:
            pub = publisher(MqttSettings(host="127.0.0.1", port=port, reconnect_max_s=1.0))
            wait_until(lambda: pub.connect_failures >= 3, "three closed connections")
        finally:
            stop.set()
            thread.join()
            server.close()
        closed = events(log_text, "mqtt_closed_before_connack")
        assert len(closed) == 1
        assert closed[0]["port"] == port
        assert not pub.connected

    def test_events_from_pahos_thread_name_the_node(
        self, broker: Broker, publisher: Make, log_text: io.StringIO
    ) -> None:
        """mqtt_connected is logged on paho's network thread; it carries `node` like every
        other event (before: context variables are per thread, and it had none)."""
        pub = publisher(plain(broker))
        assert pub.wait_connected(ACK_TIMEOUT_S)
        wait_until(lambda: bool(events(log_text, "mqtt_connected")), "mqtt_connected logged")
        assert [e.get("node") for e in events(log_text, "mqtt_connected")] == [NODE]

    def test_client_certificate_without_ca_is_tls_with_the_system_cas(
        self,
        broker_factory: Callable[..., Broker],
        tls_files: TlsFiles,
        publisher: Make,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """mqtt.tls.cert and key without ca: TLS, the broker verified against the system's CAs
        (here OpenSSL's SSL_CERT_FILE names the test CA), the client certificate presented to a
        broker that requires one. Before: accepted, and the node connected over plain TCP."""
        monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca))
        broker = broker_factory(tls=tls_files, require_certificate=True)
        cert_only = TlsSettings(cert=tls_files.client_cert, key=tls_files.client_key)
        pub = publisher(plain(broker, tls=cert_only))
        assert pub.wait_connected(ACK_TIMEOUT_S)

    def test_client_certificate_without_ca_never_downgrades_to_plain_tcp(
        self,
        broker: Broker,
        tls_files: TlsFiles,
        publisher: Make,
    ) -> None:
        """The same settings against a plain-TCP broker: the TLS handshake fails and is retried;
        the broker never accepts an MQTT CONNECT from the node."""
        cert_only = TlsSettings(cert=tls_files.client_cert, key=tls_files.client_key)
        pub = publisher(plain(broker, tls=cert_only))
        wait_until(lambda: pub.connect_failures >= 2, "two failed TLS handshakes")
        assert not pub.connected
        assert f"as {NODE}" not in broker.log_text()  # mosquitto: "New client connected ... as ID"

    def test_password_never_logged(
        self,
        secure_broker: Broker,
        tmp_path: Path,
        publisher: Make,
        log_text: io.StringIO,
    ) -> None:
        """Connect, publish, refusal and close at debug level: the password appears nowhere."""
        good = publisher(secure(secure_broker, tmp_path))
        bad = publisher(secure(secure_broker, tmp_path, password=SECRET + "-wrong"), node="t-9")
        assert good.wait_connected(ACK_TIMEOUT_S)
        acked = threading.Event()
        good.publish("verdict", json.dumps(verdict(9)), qos=1, on_ack=acked.set)
        assert acked.wait(ACK_TIMEOUT_S)
        wait_until(
            lambda: bool(events(log_text, "mqtt_connection_refused")),
            "the refusal logged",
            timeout_s=ACK_TIMEOUT_S,
        )
        good.close()
        bad.close()
        text = log_text.getvalue()
        assert "mqtt_connected" in text
        assert "mqtt_connection_refused" in text
        assert SECRET not in text

    def test_password_over_plain_tcp_is_refused(self, broker: Broker, tmp_path: Path) -> None:
        """A password without TLS is a ConfigError naming mqtt.allow_insecure; nothing is sent."""
        password_file = tmp_path / "pw"
        password_file.write_text(SECRET)
        settings = plain(broker, username="tower", password_file=password_file)
        with pytest.raises(ConfigError, match=r"mqtt\.allow_insecure") as err:
            Publisher(settings, NODE)
        assert SECRET not in str(err.value)
        assert f"as {NODE} " not in broker.log_text()

    def test_password_over_plain_tcp_with_allow_insecure(
        self, broker_factory: Callable[..., Broker], tmp_path: Path, publisher: Make
    ) -> None:
        """mqtt.allow_insecure: true lets the password go over plain TCP to a password broker."""
        broker = broker_factory(users={"tower": SECRET}, acl=ACL, allow_anonymous=False)
        password_file = tmp_path / "pw"
        password_file.write_text(SECRET)
        settings = plain(broker, username="tower", password_file=password_file, allow_insecure=True)
        pub = publisher(settings)
        assert pub.wait_connected(ACK_TIMEOUT_S)

    def test_password_from_environment(
        self,
        secure_broker: Broker,
        publisher: Make,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without password_file the password comes from the configured environment variable."""
        assert secure_broker.tls is not None
        monkeypatch.setenv("TEST_CORONA_PW", SECRET)
        settings = plain(
            secure_broker,
            username="tower",
            password_env="TEST_CORONA_PW",
            tls=TlsSettings(ca=secure_broker.tls.ca),
        )
        assert publisher(settings).wait_connected(ACK_TIMEOUT_S)

    def test_unreadable_ca_is_a_config_error(self, broker: Broker, tmp_path: Path) -> None:
        """A CA file that does not exist is a ConfigError naming mqtt.tls."""
        settings = plain(broker, tls=TlsSettings(ca=tmp_path / "missing-ca.crt"))
        with pytest.raises(ConfigError, match=r"mqtt\.tls.*missing-ca\.crt"):
            Publisher(settings, NODE)

    def test_disabled_mqtt_is_a_config_error(self) -> None:
        """Without mqtt.host there is nothing to connect to, and the error says so."""
        with pytest.raises(ConfigError, match=r"mqtt\.host"):
            Publisher(MqttSettings(), NODE)
