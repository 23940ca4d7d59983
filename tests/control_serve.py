"""`corona-control serve` as a real process for tests: its config, start, and JSON over HTTP."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.daemon_runs import CONTROL, MonitorProcess
from tests.fixtures.broker import Broker, free_port

HTTP_TIMEOUT_S = 30.0


def control_config(
    folder: Path, broker: Broker, *, database_url: str | None = None, **sections: Any
) -> Path:
    """control.yaml for a serve process: the broker, SQLite in folder, a free loopback port."""
    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "mqtt": {"host": broker.host, "port": broker.port},
        "collector": {"client_id": f"collector-{folder.name}"},
        "database": {"url": database_url or f"sqlite:///{folder / 'control.db'}"},
        "http": {"listen": f"127.0.0.1:{free_port()}", "auth": "none"},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value}
    path = folder / "control.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


class ServeProcess(MonitorProcess):
    """`corona-control serve --config CFG --log-format json`, waited for until it serves."""

    def __init__(self, config: Path, log_path: Path) -> None:
        super().__init__(
            ["serve", "--config", str(config), "--log-format", "json"],
            log_path=log_path,
            collect_stdout=False,
            command=CONTROL,
        )
        serving = self.wait_event("control_serving")
        self.url = str(serving["url"])
        self.wait_event("collector_connected")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=HTTP_TIMEOUT_S) as answer:  # noqa: S310 - our own loopback URL
            return json.loads(answer.read())
