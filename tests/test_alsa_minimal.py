"""The shipped ALSA config (systemd/asound.conf) captures real audio and keeps the codecs out.

Issue 11: with Debian's stock ALSA configuration PortAudio's device probe (at `import
sounddevice`) opens every PCM libasound2-plugins defines in /etc/alsa/conf.d, which maps
libavcodec, libx264, libx265, libpulse and the plugin modules into the daemon for good. The unit
points ALSA_CONFIG_PATH at systemd/asound.conf (alsa.conf without that folder). These tests
run a real capture through PortAudio in a separate process (PortAudio reads ALSA's config once
per initialisation, and a library once mapped stays mapped, so each configuration needs a fresh
process) from the ALSA file microphone, defined after the shipped config's text exactly as a
technician would define one, and read that process's /proc/PID/maps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from daemon.constants import SAMPLE_RATE
from daemon.listen import alsa_env
from tests.daemon_runs import MonitorProcess, noisy_clip, run_monitor, write_config
from tests.fixtures.microphone import SYSTEM_ALSA_CONF, MicEnv, alsa_file_mic
from tests.procmem import BIG_LIBRARIES, proc_memory

REPO: Final = Path(__file__).resolve().parent.parent
SHIPPED_ALSA_CONF: Final = REPO / "systemd" / "asound.conf"
SHIPPED_MODEL: Final = REPO / "models" / "corona-demo.tflite"
CLIP_S: Final = 2.0
CHILD_TIMEOUT_S: Final = 60.0
A52_CONF: Final = Path("/etc/alsa/conf.d/60-a52-encoder.conf")
"""libasound2-plugins' a52 PCM (its module links libavcodec); without it the stock config maps
no codec either, and the contrast half of these tests has nothing to show."""

# The daemon's own capture path (Capture -> ring -> read), then what the process has mapped.
CHILD: Final = """
import json, sys
import numpy as np
from daemon.config import AudioSettings
from daemon.listen.capture import Capture
from tests.procmem import proc_memory
want = int(sys.argv[2])
capture = Capture(AudioSettings(device="tower_mic", block_s=0.005, ring_s=120.0))
capture.start()
parts, n = [], 0
while n < want:
    block = capture.read(5.0)
    if block is None:
        sys.exit("no audio: " + str(capture.last_error))
    parts.append(block)
    n += block.size
memory = proc_memory()  # while the stream is open
capture.stop()
np.concatenate(parts)[:want].tofile(sys.argv[1])
# Flushed now: a crash at exit (seen once, SIGSEGV, stock config) must not lose the report.
print(json.dumps({"libraries": sorted(memory.libraries), "rss_mb": memory.vm_rss_mb}), flush=True)
"""


def names(libraries: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted({Path(p).name for p in libraries if Path(p).name.startswith(prefixes)})


def capture_in_child(mic: MicEnv, out: Path) -> dict[str, Any]:
    """Capture CLIP_S of the file microphone in a fresh process; its report (libraries, RSS)."""
    want = round(CLIP_S * SAMPLE_RATE)
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", CHILD, str(out), str(want)],
        env={**os.environ, **mic.env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    # faulthandler: a native crash prints the Python stack where it happened.
    assert done.returncode == 0, (
        f"exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    )
    got = np.fromfile(out, dtype=np.float32)
    np.testing.assert_array_equal(got, mic.expected())  # the file's exact samples, none lost
    # The last line: structlog's default configuration logs device_opened on stdout before it.
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def test_shipped_config_includes_the_system_config_and_replaces_its_hooks() -> None:
    """The shipped file includes alsa.conf (hw, plug, dsnoop stay defined) and replaces the
    hook that loads /etc/alsa/conf.d by one that loads /etc/asound.conf only."""
    text = SHIPPED_ALSA_CONF.read_text(encoding="utf-8")
    assert f"<{SYSTEM_ALSA_CONF}>" in text
    assert "!@hooks [" in text
    assert '"/etc/asound.conf"' in text
    assert 'conf.d"' not in text  # no folder of plugin definitions is loaded


def test_minimal_config_captures_without_the_plugin_libraries(tmp_path: Path) -> None:
    """Through the shipped config, PortAudio captures the file's exact samples, and neither a
    libasound2-plugins module nor libavcodec, libx264/5 or libpulse is mapped."""
    base = SHIPPED_ALSA_CONF.read_text(encoding="utf-8")
    with alsa_file_mic(tmp_path / "mic", noisy_clip(CLIP_S, seed=11), base=base) as mic:
        report = capture_in_child(mic, tmp_path / "got.f32")
    assert names(report["libraries"], BIG_LIBRARIES) == []
    assert names(report["libraries"], ("libasound.so",)) != []  # ALSA itself is there


def test_the_stock_config_defines_the_plugins_the_minimal_one_leaves_out() -> None:
    """The contrast, without opening a stream: libasound2-plugins (installed by scripts/setup)
    hooks its devices in through alsa.conf.d, so the stock config would load the a52 module and
    libavcodec (bench/memory.py measures it: 173 .so files, 17 MB); the shipped config must not
    read that folder. (A capture under the stock config crashed once in ~100 runs inside the
    plugins' probing, so the suite does not open one.)"""
    assert A52_CONF.exists(), f"{A52_CONF}: libasound2-plugins is not installed (scripts/setup)"
    settings = [
        line
        for line in SHIPPED_ALSA_CONF.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    assert not [line for line in settings if "conf.d" in line]
    assert "!@hooks [" in settings  # alsa.conf's own hook (which loads conf.d) is replaced


def test_live_daemon_on_the_minimal_config(tmp_path: Path) -> None:
    """The daemon itself (every import, the model, the stream open) on the shipped config:
    it captures (first_block) and maps none of the extras."""
    base = SHIPPED_ALSA_CONF.read_text(encoding="utf-8")
    with alsa_file_mic(tmp_path / "mic", noisy_clip(CLIP_S, seed=12), base=base) as mic:
        cfg = write_config(
            tmp_path,
            SHIPPED_MODEL,
            audio={"device": mic.device, "block_s": 0.005, "ring_s": 60},
            mqtt={"host": None},
        )
        daemon = MonitorProcess(
            ["--config", str(cfg)],
            env=mic.env,
            log_path=tmp_path / "daemon.log",
            collect_stdout=False,
        )
        try:
            daemon.wait_event("first_block")
            memory = proc_memory(daemon.process.pid)
            code, _ = daemon.stop()
        finally:
            daemon.close()
    assert code == 0, daemon.log()
    assert memory.maps_any(BIG_LIBRARIES) == []
    assert memory.maps_any(("libportaudio",)) != []


class TestAlsaConfigPath:
    """daemon.listen.alsa_env: a missing ALSA_CONFIG_PATH is an error line, not a SIGABRT."""

    def test_alsa_aborts_on_a_missing_config(self, tmp_path: Path) -> None:
        """Why the check exists: ALSA kills the process (SIGABRT) at `import sounddevice`."""
        done = subprocess.run(
            [sys.executable, "-c", "import sounddevice"],
            env={**os.environ, "ALSA_CONFIG_PATH": str(tmp_path / "missing.conf")},
            capture_output=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == -6  # SIGABRT

    @pytest.mark.parametrize("command", [["check-config"], []])
    def test_cli_names_the_missing_file_in_one_line(
        self, tmp_path: Path, command: list[str]
    ) -> None:
        """check-config and the daemon stop with one line naming the variable and the file."""
        missing = tmp_path / "missing.conf"
        done = run_monitor(command, env={"ALSA_CONFIG_PATH": str(missing)}, timeout_s=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr == (
            f"corona-monitor: ALSA_CONFIG_PATH={missing}: no such file (ALSA would abort the"
            " process); the service's is /etc/corona-monitor/asound.conf, installed by"
            " systemd/install.sh\n"
        )

    def test_one_existing_file_is_enough(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ALSA reads the files that exist among several; only none at all is refused."""
        monkeypatch.setenv("ALSA_CONFIG_PATH", f"{tmp_path / 'missing.conf'}:{SYSTEM_ALSA_CONF}")
        alsa_env.check()
        assert alsa_env.describe() == (
            f"{tmp_path / 'missing.conf'}:{SYSTEM_ALSA_CONF} (ALSA_CONFIG_PATH)"
        )
        monkeypatch.delenv("ALSA_CONFIG_PATH")
        alsa_env.check()
        assert alsa_env.describe().startswith("the system's (ALSA_CONFIG_PATH not set")

    def test_check_config_says_which_alsa_config_it_lists(self, tmp_path: Path) -> None:
        """check-config prints the ALSA config its device list comes from, and with the shipped
        config still lists and resolves the microphone defined after it."""
        base = SHIPPED_ALSA_CONF.read_text(encoding="utf-8")
        with alsa_file_mic(tmp_path / "mic", noisy_clip(CLIP_S, seed=13), base=base) as mic:
            cfg = write_config(
                tmp_path, SHIPPED_MODEL, audio={"device": mic.device}, mqtt={"host": None}
            )
            done = run_monitor(["check-config", "--config", str(cfg)], env=mic.env)
        assert done.returncode == 0, done.stderr
        assert f"ALSA config: {mic.config_path} (ALSA_CONFIG_PATH)\n" in done.stdout
        inputs = done.stdout.split("audio inputs:\n")[1].split("audio device:")[0]
        assert "] tower_mic (ALSA)" in inputs
        assert "tower_mic" in done.stdout.split("audio device:")[1].splitlines()[0]
