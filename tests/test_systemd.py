"""systemd/: the unit verifies cleanly, rates as low exposure, and install.sh behaves without root.

systemd-analyze comes from the `systemd` Debian package (.ci/run installs it). install.sh is
only ever run here with --dry-run / --print-config or as an unprivileged user: a test must not
create system users or touch /etc on the machine running it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from daemon import config
from daemon.listen import alsa_env

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "corona-monitor.service"
INSTALL = REPO / "systemd" / "install.sh"
EXEC_START = "/opt/corona-monitor/venv/bin/corona-monitor"
EXEC_RELOAD = "/bin/kill -HUP $MAINPID"
KILL = Path("/bin/kill")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")

MAX_EXPOSURE = 2.0
"""The unit rated 1.9 ("OK") with systemd 252 (1.5 before ProtectClock= went and adjtimex was
allowed, so the daemon can read whether the clock is synchronized: 0.2 each, though without
CAP_SYS_TIME the clock cannot be changed either way); 2.0 still fails if a hardening directive
is dropped (each is worth 0.1-0.5)."""


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A throwaway file system root holding the unit, the system's units and a stub ExecStart.

    `verify` checks that ExecStart is an executable file and that every unit named in the
    dependencies loads, against the root it is given; the stub stands in for the venv that
    install.sh creates on a node, and the copied units for the node's systemd.
    """
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, tmp_path / "etc/systemd/system" / UNIT.name)
    (tmp_path / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    stub = tmp_path / EXEC_START.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    # ExecReload's kill is checked against the root too (procps ships it on a node).
    (tmp_path / "bin").mkdir()
    shutil.copy(KILL, tmp_path / "bin" / KILL.name)
    return tmp_path


class TestUnit:
    def test_verify_is_clean(self, unit_root: Path) -> None:
        """systemd-analyze verify exits 0 and prints nothing (it only warns on unknown keys)."""
        result = analyze("verify", f"--root={unit_root}", UNIT.name)
        assert result.returncode == 0, result.stderr
        assert result.stdout + result.stderr == ""

    def test_verify_catches_a_bad_key(self, unit_root: Path) -> None:
        """The check above can fail: a misspelt directive produces output."""
        path = unit_root / "etc/systemd/system" / UNIT.name
        path.write_text(path.read_text().replace("WatchdogSec=", "WatchdogSecs="))
        result = analyze("verify", f"--root={unit_root}", UNIT.name)
        assert "Unknown key" in result.stdout + result.stderr

    def test_reload_is_kill_hup_not_notify_reload(self, unit_root: Path) -> None:
        """systemctl reload sends SIGHUP. Type=notify-reload (systemd 253+) is what this
        systemd (252) cannot load: verify rejects it, which is why the unit keeps Type=notify."""
        path = unit_root / "etc/systemd/system" / UNIT.name
        path.write_text(path.read_text().replace("Type=notify\n", "Type=notify-reload\n"))
        result = analyze("verify", f"--root={unit_root}", UNIT.name)
        version = analyze("--version").stdout.split()[1]
        if int(version) < 253:
            assert "notify-reload" in result.stdout + result.stderr

    def test_verify_without_the_binary_fails(self, unit_root: Path) -> None:
        """Without the installed daemon, verify reports the missing ExecStart."""
        (unit_root / EXEC_START.lstrip("/")).unlink()
        result = analyze("verify", f"--root={unit_root}", UNIT.name)
        assert result.returncode != 0
        assert EXEC_START in result.stderr

    def test_security_exposure_is_low(self) -> None:
        """systemd-analyze security --offline rates the unit below MAX_EXPOSURE."""
        result = analyze("security", "--offline=yes", str(UNIT))
        assert result.returncode == 0, result.stderr
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
        assert match, result.stdout[-500:]
        score = float(match.group(1))
        assert score < MAX_EXPOSURE, result.stdout

    def test_contract_directives(self) -> None:
        """The directives the daemon relies on are there, and PrivateDevices is not."""
        text = UNIT.read_text()
        for line in (
            "Type=notify",
            "NotifyAccess=main",
            "StateDirectory=corona-monitor",
            "Restart=on-failure",
            "User=corona",
            "SupplementaryGroups=audio",
            "DeviceAllow=char-alsa rw",
            f"Environment=ALSA_CONFIG_PATH={alsa_env.SERVICE_CONFIG}",
            f"ExecStart={EXEC_START} --config /etc/corona-monitor/config.yaml",
            f"ExecReload={EXEC_RELOAD}",
        ):
            assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
        assert re.search(r"^WatchdogSec=\d+s$", text, re.MULTILINE)
        assert not re.search(r"^PrivateDevices=", text, re.MULTILINE)
        assert not re.search(r"^MemoryDenyWriteExecute=yes", text, re.MULTILINE)


def install(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    command = ["bash", str(INSTALL), *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


class TestInstallScript:
    def test_syntax(self) -> None:
        """bash -n parses install.sh."""
        result = subprocess.run(
            ["bash", "-n", str(INSTALL)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr

    def test_strict_mode_and_executable(self) -> None:
        """install.sh runs under set -euo pipefail and is executable."""
        assert "set -euo pipefail" in INSTALL.read_text()
        assert os.access(INSTALL, os.X_OK)

    def test_dry_run_plans_the_install_and_changes_nothing(self) -> None:
        """--dry-run lists user, venv, base pip install, config, unit; nothing is created."""
        before = {p: p.exists() for p in map(Path, ("/opt/corona-monitor", "/etc/corona-monitor"))}
        result = install("--dry-run")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "python3 -m venv /opt/corona-monitor/venv" in out
        constraints = REPO / "systemd" / "tower-constraints.txt"
        assert (
            f"env PIP_CONSTRAINT={constraints} /opt/corona-monitor/venv/bin/python -m pip install"
            f" --no-cache-dir --disable-pip-version-check --only-binary=:all: {REPO}\n"
        ) in out
        assert "[train]" not in out
        assert "/etc/systemd/system/corona-monitor.service" in out
        assert "systemctl enable corona-monitor.service" in out
        assert "dry run: nothing was changed" in out
        if not before[Path("/etc/corona-monitor")]:
            assert "-m 0640 -o root -g corona" in out
            assert "/etc/corona-monitor/config.yaml" in out
            assert "/etc/corona-monitor/mqtt-password" in out
            # The unit's ALSA_CONFIG_PATH: without it ALSA would abort the daemon.
            assert (
                f"install -m 0644 -o root -g root {REPO}/systemd/asound.conf"
                f" {alsa_env.SERVICE_CONFIG}\n"
            ) in out
        assert {p: p.exists() for p in before} == before

    def test_tower_constraints_pin_what_the_tests_ran_with(self) -> None:
        """Every package of the tower's dependency closure (corona-monitor without extras) is
        pinned exactly, at the version installed here: a tower gets what this suite tested,
        not whatever the index has that day (before: an unpinned `pip install` as root)."""
        pins = {}
        for line in (REPO / "systemd" / "tower-constraints.txt").read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, version = line.partition("==")
                assert version, f"not an exact pin: {line}"
                pins[canonical(name)] = version
        closure = tower_closure()
        assert set(closure) <= set(pins), f"not pinned: {sorted(set(closure) - set(pins))}"
        assert {name: pins[name] for name in closure} == closure

    def test_dry_run_uninstall(self) -> None:
        """--dry-run --uninstall --purge succeeds and changes nothing."""
        result = install("--dry-run", "--uninstall", "--purge")
        assert result.returncode == 0, result.stderr
        assert "dry run: nothing was changed" in result.stdout

    def test_refuses_without_root(self) -> None:
        """A real install as an ordinary user stops at once with a one-line reason."""
        result = install(user=65534) if os.geteuid() == 0 else install()
        assert result.returncode == 1
        assert result.stderr.strip() == "install.sh: must run as root (sudo), or try --dry-run"

    def test_unknown_option(self) -> None:
        """A typo in an option is an error, not a silent install."""
        result = install("--dry-rn")
        assert result.returncode == 1
        assert "unknown option: --dry-rn" in result.stderr

    def test_installed_config_is_valid_and_points_at_opt(self, tmp_path: Path) -> None:
        """The config a fresh install writes loads, with the model under /opt and no broker."""
        result = install("--print-config")
        assert result.returncode == 0, result.stderr
        path = tmp_path / "config.yaml"
        path.write_text(result.stdout)
        settings = config.load(path)
        assert settings.model.path == Path("/opt/corona-monitor/models/corona-demo.tflite")
        assert settings.mqtt.host is None
        expected = (
            (REPO / "config.yaml")
            .read_text()
            .replace(
                "  # path: models/corona-demo.tflite",
                "  path: /opt/corona-monitor/models/corona-demo.tflite",
            )
        )
        assert result.stdout == expected


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tower_closure() -> dict[str, str]:
    """name -> installed version of every package corona-monitor needs without extras."""
    found: dict[str, str] = {}

    def walk(name: str) -> None:
        key = canonical(name)
        if key in found:
            return
        dist = importlib.metadata.distribution(name)
        found[key] = dist.version
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                walk(requirement.name)

    for spec in importlib.metadata.distribution("corona-monitor").requires or []:
        requirement = Requirement(spec)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            walk(requirement.name)
    return found
