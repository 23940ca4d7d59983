"""The web page in a real browser (Debian's headless Chromium, tests/fixtures/browser.py) against
a real WebServer and SQLite store holding a small fleet (tests/control_fleet.py).

Every page load also collects the page's script errors and CSP violations (a listener added
through the DevTools protocol before any page script runs): each test ends with none.
Screenshots are kept as artefacts.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

import pytest
import soundfile as sf
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from control.collector import Collector
from control.config import CollectorSettings, ControlSettings
from daemon.config import MqttSettings
from daemon.constants import SAMPLE_RATE
from tests.control_fleet import Fleet, fill_fleet, status_record, verdict_record
from tests.control_records import verdict_in
from tests.daemon_runs import noisy_clip
from tests.fixtures.broker import Broker, Subscriber
from tests.fixtures.browser import Screenshot
from tests.fixtures.control_web import PASSWORD, USER, Web, WebFactory
from tests.watch_messages import PREFIX, publish_raw, verdict_doc

WAIT_S: Final = 20.0
WATCH_ERRORS: Final = """
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push("error: " + e.message));
window.addEventListener("unhandledrejection",
    (e) => window.__errors.push("rejection: " + e.reason));
document.addEventListener("securitypolicyviolation",
    (e) => window.__errors.push("csp: " + e.violatedDirective + " " + e.blockedURI));
"""
HOSTILE_NODES: Final = {
    "img": '"><img src=x onerror="window.__pwned=1">',
    "svg": "<svg onload=window.__pwned=2>",
    "rtl": "\u202etower-0001",
}
"""Node ids that would run script or pass for another node if they were put in the page as
markup or shown raw (a node id holds no "/", so no closing tag)."""
HOSTILE_STATUS: Final = "<script>alert(1)</script>"


@pytest.fixture
def page(browser: webdriver.Chrome) -> webdriver.Chrome:
    """The browser, collecting script errors and CSP violations from every page it loads."""
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WATCH_ERRORS})
    return browser


def wait_for(driver: webdriver.Chrome, what: Callable[[webdriver.Chrome], Any]) -> Any:
    return WebDriverWait(driver, WAIT_S).until(what)


def errors(driver: webdriver.Chrome) -> list[str]:
    found = driver.execute_script("return window.__errors || []")
    assert isinstance(found, list)
    return [str(e) for e in found]


def path_of(driver: webdriver.Chrome) -> str:
    return urlsplit(driver.current_url).path


def log_in(driver: webdriver.Chrome, web: Web, start: str = "/") -> None:
    """Open `start`, be sent to the login page, log in, and be back at `start`."""
    driver.get(web.base + start)
    wait_for(driver, lambda d: path_of(d) == "/login")
    driver.find_element(By.ID, "user").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, lambda d: path_of(d) == urlsplit(start).path)


def fleet_rows(driver: webdriver.Chrome) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#rows tr")


def cells(row: WebElement) -> list[str]:
    return [td.text for td in row.find_elements(By.TAG_NAME, "td")]


def canvas_ink(driver: webdriver.Chrome) -> int:
    """Pixels of the plot's canvas that something was drawn on."""
    ink = driver.execute_script(
        """
        const c = document.getElementById("plot");
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
        return n;
        """
    )
    assert isinstance(ink, int)
    return ink


@pytest.fixture
def fleet(web: Web) -> Fleet:
    return fill_fleet(web.store, datetime.fromtimestamp(web.clock(), UTC))


class TestFleetPage:
    def test_login_then_the_fleet_with_the_alarm_first(
        self, page: webdriver.Chrome, web: Web, fleet: Fleet, screenshot: Screenshot
    ) -> None:
        """Log in through the form; one row per node, the node in alarm on top and in red."""
        log_in(page, web)
        wait_for(page, lambda d: len(fleet_rows(d)) == 4)
        rows = fleet_rows(page)
        nodes = [r.get_attribute("data-node") for r in rows]
        assert nodes[0] == fleet.alarm
        assert set(nodes) == {fleet.quiet, fleet.alarm, fleet.replay, fleet.stale}
        assert "in-alarm" in (rows[0].get_attribute("class") or "")
        first = cells(rows[0])
        assert first[0] == fleet.alarm
        assert first[1:4] == ["online", "ALARM", "anomalous"]
        assert first[4] == "0.920"
        by_node = {r.get_attribute("data-node"): cells(r) for r in rows}
        assert by_node[fleet.stale][9] == "3"  # gaps
        assert by_node[fleet.stale][10] == "STALE"
        assert by_node[fleet.replay][6] == "2026-11-02.wav@1170.0s"
        assert by_node[fleet.replay][7] == "no health"
        assert page.find_element(By.ID, "who").text == USER
        screenshot("fleet")
        assert errors(page) == []

    def test_headers_sort_the_table(self, page: webdriver.Chrome, web: Web, fleet: Fleet) -> None:
        """A click on Node sorts by name, a second click reverses it."""
        log_in(page, web)
        wait_for(page, lambda d: len(fleet_rows(d)) == 4)
        header = page.find_element(By.CSS_SELECTOR, 'th[data-key="node"] button')
        header.click()
        by_name = sorted([fleet.quiet, fleet.alarm, fleet.replay, fleet.stale])
        wait_for(page, lambda d: [r.get_attribute("data-node") for r in fleet_rows(d)] == by_name)
        header.click()
        wait_for(
            page,
            lambda d: [r.get_attribute("data-node") for r in fleet_rows(d)] == by_name[::-1],
        )
        assert errors(page) == []

    def test_the_table_follows_new_data_without_a_reload(
        self, page: webdriver.Chrome, web: Web, fleet: Fleet
    ) -> None:
        """A node that first publishes after the page opened appears by itself (polling)."""
        log_in(page, web)
        wait_for(page, lambda d: len(fleet_rows(d)) == 4)
        page.execute_script("window.__same_page = true")
        doc = verdict_doc("tower-0099", 0, datetime.fromtimestamp(web.clock(), UTC))
        web.store.write([verdict_record(doc, web.clock())])
        wait_for(page, lambda d: len(fleet_rows(d)) == 5)
        assert page.execute_script("return window.__same_page") is True

    @pytest.mark.parametrize(
        "target", ["//evil.example/", "/\t/evil.example/", "https://evil.example/"]
    )
    def test_the_login_never_sends_to_another_site(
        self, page: webdriver.Chrome, web: Web, target: str
    ) -> None:
        """?next= is followed only to a page of this site, however it is spelled."""
        page.get(web.base + "/login?next=" + quote(target, safe=""))
        page.find_element(By.ID, "user").send_keys(USER)
        page.find_element(By.ID, "password").send_keys(PASSWORD)
        page.find_element(By.ID, "submit").click()
        wait_for(page, lambda d: path_of(d) != "/login")
        assert urlsplit(page.current_url).netloc == urlsplit(web.base).netloc
        assert path_of(page) == "/"

    def test_a_wrong_password_says_so(self, page: webdriver.Chrome, web: Web) -> None:
        page.get(web.base + "/login")
        page.find_element(By.ID, "user").send_keys(USER)
        page.find_element(By.ID, "password").send_keys("not the password")
        page.find_element(By.ID, "submit").click()
        wait_for(page, lambda d: d.find_element(By.ID, "login-error").text != "")
        assert page.find_element(By.ID, "login-error").text == "wrong user name or password"
        assert path_of(page) == "/login"
        assert page.get_cookies() == []


class TestNodePage:
    def test_the_plot_is_drawn(
        self, page: webdriver.Chrome, web: Web, fleet: Fleet, screenshot: Screenshot
    ) -> None:
        """The node page draws its day of verdicts; the alarm history and facts are shown."""
        log_in(page, web, f"/nodes/{fleet.alarm}")
        plot = wait_for(page, lambda d: d.find_element(By.CSS_SELECTOR, "#plot[data-points]"))
        assert int(plot.get_attribute("data-points") or 0) > 10
        assert canvas_ink(page) > 5000
        assert page.find_element(By.ID, "node-name").text == fleet.alarm
        wait_for(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alarm-rows tr")) == 3)
        assert (
            page.find_element(By.CSS_SELECTOR, '[data-range="day"]').get_attribute("aria-pressed")
            == "true"
        )
        screenshot("node")
        assert errors(page) == []

    def test_a_replay_opens_on_all_of_its_file(
        self, page: webdriver.Chrome, web: Web, fleet: Fleet, screenshot: Screenshot
    ) -> None:
        """A replay's windows lie in 1970: its page shows 'all' of them, not an empty today."""
        log_in(page, web, f"/nodes/{fleet.replay}")
        plot = wait_for(page, lambda d: d.find_element(By.CSS_SELECTOR, "#plot[data-points]"))
        assert int(plot.get_attribute("data-points") or 0) > 10
        assert (
            page.find_element(By.CSS_SELECTOR, '[data-range="all"]').get_attribute("aria-pressed")
            == "true"
        )
        assert "1970-01-01" in page.find_element(By.ID, "range-label").text
        page.find_element(By.CSS_SELECTOR, '[data-range="week"]').click()
        wait_for(
            page,
            lambda d: (
                d.find_element(By.CSS_SELECTOR, '[data-range="week"]').get_attribute("aria-pressed")
                == "true"
            ),
        )
        screenshot("replay")
        assert errors(page) == []

    def test_the_gaps_of_a_node(self, page: webdriver.Chrome, web: Web, fleet: Fleet) -> None:
        log_in(page, web, f"/nodes/{fleet.stale}")
        row = wait_for(page, lambda d: d.find_element(By.CSS_SELECTOR, "#gap-rows tr"))
        assert cells(row) == ["5", "7", "3", "missing"]
        assert errors(page) == []

    def test_acknowledge_an_alarm_with_a_note(
        self, page: webdriver.Chrome, web: Web, fleet: Fleet, screenshot: Screenshot
    ) -> None:
        """The Acknowledge button stores who, when and the note; the row then shows them."""
        log_in(page, web, f"/nodes/{fleet.alarm}")
        current = web.store.alarms(open_only=True)[0]
        form = wait_for(
            page, lambda d: d.find_element(By.CSS_SELECTOR, f'form[data-alarm="{current.id}"]')
        )
        note = "crew 3 sent, <b>ETA</b> 40 min"
        form.find_element(By.TAG_NAME, "input").send_keys(note)
        screenshot("before-ack")
        form.find_element(By.TAG_NAME, "button").click()
        wait_for(
            page, lambda d: not d.find_elements(By.CSS_SELECTOR, f'form[data-alarm="{current.id}"]')
        )
        stored = next(a for a in web.store.alarms(open_only=True) if a.id == current.id)
        assert (stored.acked_by, stored.ack_note) == (USER, note)
        assert stored.acked_at == pytest.approx(web.clock())
        row = page.find_element(By.CSS_SELECTOR, f'#alarm-rows tr[data-alarm="{current.id}"]')
        assert cells(row)[4] == note  # as text: the <b> is not markup
        assert USER in cells(row)[3]
        screenshot("after-ack")
        assert errors(page) == []


class TestHostileText:
    def test_hostile_node_names_are_text(
        self, page: webdriver.Chrome, web: Web, fleet: Fleet, screenshot: Screenshot
    ) -> None:
        """Markup in node ids and status is shown literally and runs nothing, on the fleet page
        and on the node's own page; a right-to-left override is shown escaped."""
        now = datetime.fromtimestamp(web.clock(), UTC)
        records: list[Any] = []
        for i, node in enumerate(HOSTILE_NODES.values()):
            doc = verdict_doc(node, i, now, sensor="<img src=x onerror=window.__pwned=3>")
            records += [
                verdict_record(doc, web.clock()),
                status_record(node, HOSTILE_STATUS, web.clock()),
            ]
        web.store.write(records)
        log_in(page, web)
        wait_for(page, lambda d: len(fleet_rows(d)) == 4 + len(HOSTILE_NODES))
        texts = [cells(r)[0] for r in fleet_rows(page)]
        assert "?" + HOSTILE_NODES["img"] in texts
        assert "?" + HOSTILE_NODES["svg"] in texts
        assert "?\\u202etower-0001" in texts
        statuses = {cells(r)[1] for r in fleet_rows(page)}
        assert HOSTILE_STATUS in statuses
        assert page.find_elements(By.CSS_SELECTOR, "#rows img, #rows script, #rows svg") == []
        screenshot("hostile-fleet")
        link = page.find_element(
            By.CSS_SELECTOR, f'#rows tr a[href="/nodes/{quote(HOSTILE_NODES["img"], safe="")}"]'
        )
        link.click()
        wait_for(page, lambda d: d.find_element(By.ID, "node-name").text != "")
        assert page.find_element(By.ID, "node-name").text == "?" + HOSTILE_NODES["img"]
        assert page.execute_script("return window.__pwned") is None
        screenshot("hostile-node")
        assert errors(page) == []


class TestReadOnlyDisplay:
    def test_the_fleet_without_a_login_and_no_acknowledge(
        self, page: webdriver.Chrome, web_factory: WebFactory, screenshot: Screenshot
    ) -> None:
        web = web_factory(auth="none")
        fleet = fill_fleet(web.store, datetime.fromtimestamp(web.clock(), UTC))
        page.get(web.base + "/")
        wait_for(page, lambda d: len(fleet_rows(d)) == 4)
        assert page.find_element(By.ID, "who").text == "read-only display"
        assert not page.find_element(By.ID, "logout").is_displayed()
        page.get(web.base + f"/nodes/{fleet.alarm}")
        wait_for(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#alarm-rows tr")) == 3)
        assert page.find_elements(By.CSS_SELECTOR, "form.ack-form") == []
        screenshot("wall")
        assert errors(page) == []


class TestEvidence:
    def test_fetch_a_clip_from_the_node_play_it_and_label_the_window(
        self,
        page: webdriver.Chrome,
        web_factory: WebFactory,
        broker: Broker,
        subscribe: Callable[..., Subscriber],
        screenshot: Screenshot,
    ) -> None:
        """Fetch asks the node over MQTT (a real collector); the node's FLAC answer is stored
        and plays in the page's <audio> (Chromium decodes it: its duration is the clip's); the
        engineer's label and note are stored as the user's."""
        collectors: list[Collector] = []
        # The collector needs the web server's store, so it is made after it: looked up late.
        web = web_factory(request_clip=lambda *a: collectors[0].request_clip(*a))  # noqa: PLW0108
        settings = ControlSettings(
            mqtt=MqttSettings(host=broker.host, port=broker.port, prefix=PREFIX),
            collector=CollectorSettings(client_id="room-browser"),
        )
        collectors.append(Collector(web.store, settings))
        collectors[0].start()
        try:
            node, clip = "tower-e", "tower-e_5_20261125T120000000Z_anomalous.flac"
            web.store.write([verdict_in(node, 5, label="anomalous", score=0.97, clip=clip)])
            requests = subscribe(broker, f"{PREFIX}/{node}/clip/request")
            wait_for(page, lambda _d: collectors[0].stats.snapshot()["mqtt_connected"])
            log_in(page, web, f"/nodes/{node}")
            wait_for(page, lambda d: d.find_element(By.CSS_SELECTOR, "[data-fetch]")).click()
            asked = requests.wait_for(lambda m: m.json() == {"id": clip})
            assert asked.qos == 1
            flac = io.BytesIO()
            sf.write(flac, noisy_clip(1.0, seed=5), SAMPLE_RATE, format="FLAC")
            publish_raw(broker, [(f"{PREFIX}/{node}/clip/{clip}", flac.getvalue())], retain=False)
            audio = wait_for(page, lambda d: d.find_element(By.CSS_SELECTOR, "audio[data-clip]"))
            duration = page.execute_async_script(
                "const [audio, done] = arguments;"
                "audio.addEventListener('loadedmetadata', () => done(audio.duration));"
                "audio.addEventListener('error', () => done(-1)); audio.load();",
                audio,
            )
            assert duration == pytest.approx(1.0, abs=0.01)
            page.find_element(By.CSS_SELECTOR, 'input[data-note="5"]').send_keys(
                "a crow, not corona"
            )
            page.find_element(By.CSS_SELECTOR, 'button[data-label="normal"][data-seq="5"]').click()
            wait_for(page, lambda _d: web.store.labels(node) != [])
            (label,) = web.store.labels(node)
            assert (label.seq, label.label, label.labelled_by) == (5, "normal", USER)
            assert label.note == "a crow, not corona"
            screenshot("labelled")
            assert errors(page) == []
        finally:
            collectors[0].stop()
