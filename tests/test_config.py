"""daemon.config: defaults, the shipped config.yaml, and one clear message per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import config
from daemon.config import Settings
from daemon.constants import SAMPLE_RATE
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class TestDefaults:
    def test_shipped_config_equals_builtin_defaults(self) -> None:
        """The documented config.yaml says exactly what the built-in defaults are."""
        shipped = config.load(REPO / "config.yaml")
        builtin = config.load(None)
        assert config.as_dict(shipped) == config.as_dict(builtin)

    def test_builtin_defaults(self) -> None:
        """Defaults follow the design: 44.1 kHz, the model's window length, MQTT off."""
        settings = config.load(None)
        assert settings.audio.sample_rate == SAMPLE_RATE
        assert settings.window.length_s is None  # the model's window_s (30 s for the demo)
        assert settings.window.hop_s is None
        assert settings.features.line_hz == "auto"
        assert settings.mqtt.enabled is False
        assert settings.node_id

    def test_settings_are_frozen(self) -> None:
        """Settings cannot be changed after validation."""
        settings = config.load(None)
        with pytest.raises(AttributeError):
            settings.node_id = "other"  # type: ignore[misc]

    def test_empty_file_means_defaults(self, tmp_path: Path) -> None:
        """An empty YAML file is a valid config of defaults."""
        assert isinstance(config.load(write(tmp_path, "")), Settings)


class TestValues:
    def test_relative_paths_resolve_against_the_config_folder(self, tmp_path: Path) -> None:
        """model.path is relative to the config file, not to the working directory."""
        settings = config.load(write(tmp_path, "model:\n  path: m/x.tflite\n"))
        assert settings.model.path == tmp_path.resolve() / "m" / "x.tflite"

    def test_device_by_name_or_index(self, tmp_path: Path) -> None:
        """audio.device takes a name or an index."""
        assert (
            config.load(write(tmp_path, "audio: {device: tower_mic}")).audio.device == "tower_mic"
        )
        assert config.load(write(tmp_path, "audio: {device: 3}")).audio.device == 3

    def test_integer_accepted_where_a_number_is_expected(self, tmp_path: Path) -> None:
        """window.length_s: 10 is read as 10.0 seconds."""
        assert config.load(write(tmp_path, "window: {length_s: 10}")).window.length_s == 10.0

    def test_password_from_file(self, tmp_path: Path) -> None:
        """The password comes from password_file's first line."""
        (tmp_path / "pw").write_text("s3cret\n", encoding="utf-8")
        settings = config.load(write(tmp_path, "mqtt: {password_file: pw}"))
        assert settings.mqtt.password() == "s3cret"
        assert "s3cret" not in str(config.as_dict(settings))

    def test_password_from_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a password file, the named environment variable supplies the password."""
        monkeypatch.setenv("TOWER_PW", "from-env")
        settings = config.load(write(tmp_path, "mqtt: {password_env: TOWER_PW}"))
        assert settings.mqtt.password() == "from-env"

    @pytest.mark.parametrize(
        ("listen", "address"),
        [
            ("9750", ("127.0.0.1", 9750)),
            ("'9750'", ("127.0.0.1", 9750)),
            ("0.0.0.0:9750", ("0.0.0.0", 9750)),  # noqa: S104 - asked for by name
            ("'[::1]:9750'", ("::1", 9750)),
            ("localhost:9750", ("localhost", 9750)),
        ],
    )
    def test_metrics_listen(self, tmp_path: Path, listen: str, address: tuple[str, int]) -> None:
        """metrics.listen: a bare port is loopback; another address only when it is named."""
        settings = config.load(write(tmp_path, f"metrics: {{listen: {listen}}}"))
        assert settings.metrics.address == address

    def test_metrics_and_home_assistant_off_by_default(self) -> None:
        """No endpoint, no textfile, no discovery unless configured."""
        settings = config.load(None)
        assert settings.metrics.address is None
        assert settings.metrics.textfile is None
        assert settings.homeassistant.enabled is False
        assert settings.homeassistant.discovery_prefix == "homeassistant"


BAD = [
    ("mqtt: {port: abc}", "mqtt.port: expected an integer 1-65535, got 'abc'"),
    ("mqtt: {port: 70000}", "mqtt.port: expected an integer 1-65535, got 70000"),
    ("mqtt: {qos: 3}", "mqtt.qos: expected an integer 0-2"),
    ("mqtt: {prot: 1}", "mqtt.prot: unknown key"),
    ("colour: red", "colour: unknown key"),
    ("audio: {sample_rate: 48000}", "audio.sample_rate: expected an integer 44100"),
    ("audio: {channels: true}", "audio.channels: expected an integer"),
    ("audio: {block_s: -1}", "audio.block_s: expected a number"),
    ("window: {length_s: 10, hop_s: 20}", "window.hop_s: must be at most window.length_s"),
    ("alarm: {k: 4, n: 3}", "alarm.k: must be at most alarm.n"),
    ("logging: {format: xml}", "logging.format: expected one of 'auto', 'json', 'console'"),
    ("audio: [1, 2]", "audio: expected a mapping, got a list"),
    ("node_id: a/b", "node_id: must be non-empty without '/'"),
    ("model: {threshold: 1.5}", "model.threshold: expected a number 0-1 or null"),
    ("mqtt: {tls: {cert: c.pem}}", "mqtt.tls: cert and key go together"),
    ("- just\n- a list", "expected a mapping of keys at the top"),
    ("mqtt: {port: [", "not valid YAML"),
    ("metrics: {listen: abc}", "metrics.listen: expected PORT or HOST:PORT with a port 1-65535"),
    ("metrics: {listen: 70000}", "metrics.listen: expected PORT or HOST:PORT"),
    ("metrics: {listen: '1.2.3.4:'}", "metrics.listen: expected PORT or HOST:PORT"),
    ("metrics: {listen: 'tower:9750'}", "metrics.listen: the host must be an IP address"),
    ("metrics: {listen: '::1:9750'}", "metrics.listen: the host must be an IP address"),
    ("metrics: {listen: [9750]}", "metrics.listen: expected"),
    ("metrics: {textfile: corona.txt}", "metrics.textfile: must end in .prom"),
    ("metrics: {port: 1}", "metrics.port: unknown key"),
    ("homeassistant: {enabled: yes please}", "homeassistant.enabled: expected true or false"),
    ("homeassistant: {discovery_prefix: 'ha/#'}", "homeassistant.discovery_prefix: a topic"),
]


class TestRejects:
    @pytest.mark.parametrize(("text", "message"), BAD)
    def test_bad_value_names_the_key(self, tmp_path: Path, text: str, message: str) -> None:
        """Each bad value gives one ConfigError naming the file and the key path."""
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            config.load(path)
        assert message in str(info.value)
        assert str(path) in str(info.value)
        assert "\n" not in str(info.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config path that does not exist is named in the error."""
        with pytest.raises(ConfigError, match=r"nope\.yaml"):
            config.load(tmp_path / "nope.yaml")

    def test_unreadable_password_file(self, tmp_path: Path) -> None:
        """A password_file that cannot be read names the key and the file."""
        settings = config.load(write(tmp_path, "mqtt: {password_file: missing-pw}"))
        with pytest.raises(ConfigError, match=r"mqtt\.password_file: .*missing-pw"):
            settings.mqtt.password()
