"""Benchmark: the live daemon's CPU (percent of one core) and memory over 60 s of real-time capture.

Run from the repository root: python -m bench.live [--seconds 60] [--mqtt off|on|both].
The microphone is a private PulseAudio null sink that paplay feeds a synthesized WAV in real
time (tests/MICROPHONES.md, recipe 2); the daemon is `python -m daemon.cli --config CFG` with
`audio.device: pulse`. Start-up (process start to `device_opened`) is reported on its own; the
60 s measurement starts after it. CPU comes from /proc/PID/stat (utime + stime, all threads),
memory from /proc/PID/status (VmRSS sampled each second, VmHWM = peak RSS since start).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from bench.machine import machine_lines
from bench.replay import CACHE_DIR, bench_model, synth_wav
from tests.fixtures.broker import Broker
from tests.fixtures.microphone import PulseSink, pulse_null_sink

MEASURE_S: Final = 60.0
WAV_S: Final = 150.0
"""Synthesized audio played into the sink: start-up plus the measurement, with room to spare."""
SYNTH_SEED: Final = 2
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
SAMPLE_EVERY_S: Final = 1.0
SETTLE_S: Final = 3.0
"""After device_opened, PortAudio's ALSA thread busy-polls the `pulse` plugin until the stream
delivers steadily (about 0.7 CPU s over 1-2 s, seen with perf: poll/getpid in libasound and
libpulse). That is stream start-up on the test microphone, so it is reported with start-up."""
CPU_GOAL_PERCENT: Final = 1.0
RSS_GOAL_MB: Final = 80.0
SHIPPED_ALSA_CONF: Final = Path(__file__).resolve().parent.parent / "systemd" / "asound.conf"
PULSE_ALSA_CONF: Final = Path("/usr/share/alsa/alsa.conf.d/50-pulseaudio.conf")
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
MONITOR: Final = [sys.executable, "-m", "daemon.cli"]


def cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds (10 ms resolution)."""
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_s(pid: int) -> dict[str, float]:
    """utime + stime per thread, keyed "main" for the main thread, else "NAME/TID"."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        key = "main" if int(task.name) == pid else f"{name}/{task.name}"
        out[key] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, MB (MiB)."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


@dataclass(frozen=True)
class LiveResult:
    label: str
    opened_wall_s: float
    """Process start to the daemon's device_opened event."""
    opened_cpu_s: float
    startup_cpu_s: float
    """CPU from process start to SETTLE_S after device_opened."""
    startup_rss_mb: float
    measured_s: float
    cpu_s: float
    rss_max_mb: float
    hwm_mb: float
    pulse_cpu_s: float
    player_cpu_s: float
    windows: int
    exit_code: int
    threads_cpu_s: dict[str, float]

    def percent(self, seconds: float) -> float:
        return 100.0 * seconds / self.measured_s


def minimal_alsa_config(folder: Path) -> Path:
    """The service's ALSA config (systemd/asound.conf), plus only the `pulse` PCM.

    With the system config, PortAudio's device probe at start-up opens every PCM that
    libasound2-plugins defines (a52, jack, speex, upmix, lavrate, ...), which maps their
    libraries (libavcodec, libx265, ...) into the daemon: RSS that a tower running the service
    (which reads systemd/asound.conf: alsa.conf without /etc/alsa/conf.d) does not have. The
    test microphone is PulseAudio, so its PCM is added back (bench/memory.py measures the
    shipped file alone, on the ALSA file microphone).
    """
    path = folder / "minimal-alsa.conf"
    path.write_text(
        SHIPPED_ALSA_CONF.read_text(encoding="utf-8") + PULSE_ALSA_CONF.read_text(encoding="utf-8")
    )
    return path


def write_config(
    folder: Path, model: Path, broker: Broker | None, block_s: float | None = None
) -> Path:
    doc = {
        "node_id": "bench-live",
        "audio": {"device": "pulse", **({"block_s": block_s} if block_s else {})},
        "model": {"path": str(model)},
        "mqtt": {"host": broker.host, "port": broker.port} if broker else {"host": None},
        "outbox": {"path": str(folder / "outbox.sqlite"), "min_free_mb": 0},
        "logging": {"level": "info", "format": "json"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def wait_for_event(log_path: Path, event: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if f'"event": "{event}"' in line or f'"event":"{event}"' in line:
                return
        if child.poll() is not None:
            raise SystemExit(f"daemon exited at start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.02)
    raise SystemExit(f"no {event} within {START_TIMEOUT_S} s:\n{log_path.read_text()[-2000:]}")


def logged_windows(log_path: Path) -> int:
    for line in reversed(log_path.read_text(encoding="utf-8", errors="replace").splitlines()):
        if '"stopped"' in line:
            try:
                return int(json.loads(line).get("windows", -1))
            except (ValueError, AttributeError):
                return -1
    return -1


def measure(
    label: str,
    *,
    sink: PulseSink,
    wav: Path,
    model: Path,
    folder: Path,
    broker: Broker | None,
    measure_s: float,
    alsa_config: Path | None,
    block_s: float | None,
) -> LiveResult:
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, model, broker, block_s)
    player = sink.play(wav)
    if sink.pid is None:
        raise SystemExit("pulseaudio is not running")
    log_path = folder / "daemon.log"
    with log_path.open("wb") as log_file:
        start = time.perf_counter()
        child = subprocess.Popen(
            [*MONITOR, "--config", str(config)],
            env={
                **os.environ,
                **sink.env,
                **({"ALSA_CONFIG_PATH": str(alsa_config)} if alsa_config else {}),
            },
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            wait_for_event(log_path, "device_opened", child)
            opened_wall_s = time.perf_counter() - start
            opened_cpu_s = cpu_s(child.pid)
            time.sleep(SETTLE_S)
            startup_cpu_s = cpu_s(child.pid)
            startup_rss_mb = memory_mb(child.pid)["VmRSS"]
            pulse0, player0, daemon0 = cpu_s(sink.pid), cpu_s(player.pid), cpu_s(child.pid)
            threads0 = thread_cpu_s(child.pid)
            t0 = time.perf_counter()
            rss_max_mb = startup_rss_mb
            while (elapsed := time.perf_counter() - t0) < measure_s:
                time.sleep(min(SAMPLE_EVERY_S, measure_s - elapsed))
                rss_max_mb = max(rss_max_mb, memory_mb(child.pid)["VmRSS"])
            daemon1, pulse1, player1 = cpu_s(child.pid), cpu_s(sink.pid), cpu_s(player.pid)
            threads1 = thread_cpu_s(child.pid)
            measured_s = time.perf_counter() - t0
            hwm_mb = memory_mb(child.pid)["VmHWM"]
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                exit_code = child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                exit_code = child.wait()
    player.kill()
    player.wait()
    return LiveResult(
        label=label,
        opened_wall_s=opened_wall_s,
        opened_cpu_s=opened_cpu_s,
        startup_cpu_s=startup_cpu_s,
        startup_rss_mb=startup_rss_mb,
        measured_s=measured_s,
        cpu_s=daemon1 - daemon0,
        rss_max_mb=rss_max_mb,
        hwm_mb=hwm_mb,
        pulse_cpu_s=pulse1 - pulse0,
        player_cpu_s=player1 - player0,
        windows=logged_windows(log_path),
        exit_code=exit_code,
        threads_cpu_s={key: cpu - threads0.get(key, 0.0) for key, cpu in threads1.items()},
    )


def baseline_rss_mb(code: str, env: dict[str, str] | None = None) -> float:
    """Peak RSS (VmHWM) of a fresh interpreter after running ``code``: what imports alone cost.

    Not ru_maxrss: on Linux it keeps the forking parent's peak across exec.
    """
    show = "import pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{show}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    hwm = next(line for line in done.stdout.splitlines() if line.startswith("VmHWM:"))
    return int(hwm.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=MEASURE_S, help="measurement length")
    parser.add_argument("--mqtt", choices=("off", "on", "both"), default="both")
    parser.add_argument(
        "--block-s", type=float, default=None, help="audio.block_s (default: the config's)"
    )
    parser.add_argument(
        "--alsa",
        choices=("system", "minimal", "both"),
        default="both",
        help="the system's ALSA config, or one that defines only the pulse PCM",
    )
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="WAV and model cache")
    args = parser.parse_args()

    machine = machine_lines(("numpy", "ai-edge-litert", "sounddevice", "structlog", "paho-mqtt"))
    wav = synth_wav(max(WAV_S, args.seconds + 60.0), SYNTH_SEED, args.cache)
    model = bench_model(args.cache)
    modes = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}[args.mqtt]
    results: list[LiveResult] = []
    with tempfile.TemporaryDirectory(prefix="corona-bench-live-") as tmp:
        folder = Path(tmp)
        with pulse_null_sink(folder / "pulse") as sink:
            minimal = minimal_alsa_config(folder)
            alsa_configs = {"system": [None], "minimal": [minimal], "both": [None, minimal]}
            for alsa_config in alsa_configs[args.alsa]:
                for mode in modes:
                    broker = Broker(folder / "broker") if mode == "on" else None
                    if broker is not None:
                        broker.start()
                    label = "MQTT on" if broker else "MQTT off"
                    label += ", minimal ALSA" if alsa_config else ", system ALSA"
                    try:
                        results.append(
                            measure(
                                label,
                                sink=sink,
                                wav=wav,
                                model=model,
                                folder=folder / f"{mode}-{len(results)}",
                                broker=broker,
                                measure_s=args.seconds,
                                alsa_config=alsa_config,
                                block_s=args.block_s,
                            )
                        )
                    finally:
                        if broker is not None:
                            broker.stop()
        minimal_env = {"ALSA_CONFIG_PATH": str(minimal)}
        baselines = {
            "python -c pass": baseline_rss_mb("pass"),
            "import numpy": baseline_rss_mb("import numpy"),
            "import numpy, structlog": baseline_rss_mb("import numpy, structlog"),
            "import numpy, ai_edge_litert.interpreter": baseline_rss_mb(
                "import numpy, ai_edge_litert.interpreter"
            ),
            "import numpy, sounddevice (system ALSA)": baseline_rss_mb("import numpy, sounddevice"),
            "import numpy, sounddevice (minimal ALSA)": baseline_rss_mb(
                "import numpy, sounddevice", minimal_env
            ),
            "import daemon.service (system ALSA)": baseline_rss_mb("import daemon.service"),
            "import daemon.service (minimal ALSA)": baseline_rss_mb(
                "import daemon.service", minimal_env
            ),
        }

    print("\n".join(machine))
    print(
        f"microphone: PulseAudio null sink (real-time), paplay of {wav.name};"
        f" model {model.name}; 30 s windows; audio.block_s {args.block_s or 'default (0.1)'}"
    )
    print(
        f"start-up: process start -> device_opened (wall s, CPU s), then {SETTLE_S:.0f} s of stream"
        f" warm-up (+settle, CPU s);\nthen {args.seconds:.0f} s measured: CPU from /proc/PID/stat,"
        " RSS max of VmRSS sampled each second, VmHWM at the end\n"
    )
    print(
        f"{'':26s} {'open s':>6s} {'open CPU':>8s} {'+settle':>7s} {'CPU %':>7s} {'RSS max':>8s}"
        f" {'VmHWM':>7s} {'pulse %':>8s} {'paplay %':>8s} {'windows':>7s} {'exit':>4s}"
    )
    for r in results:
        print(
            f"{r.label:26s} {r.opened_wall_s:6.2f} {r.opened_cpu_s:8.2f}"
            f" {r.startup_cpu_s - r.opened_cpu_s:7.2f}"
            f" {r.percent(r.cpu_s):6.2f}% {r.rss_max_mb:6.1f}MB {r.hwm_mb:5.1f}MB"
            f" {r.percent(r.pulse_cpu_s):7.2f}% {r.percent(r.player_cpu_s):7.2f}%"
            f" {r.windows:7d} {r.exit_code:4d}"
        )
    print("\nCPU % per daemon thread over the measurement (main = the Python loop):")
    for r in results:
        shares = ", ".join(
            f"{key} {r.percent(cpu):.2f}%" for key, cpu in sorted(r.threads_cpu_s.items())
        )
        print(f"  {r.label:26s} {shares}")
    print("\nRSS baselines (peak RSS of a fresh interpreter):")
    for label, mb in baselines.items():
        print(f"  {label:44s} {mb:6.1f} MB")
    worst_cpu = max(r.percent(r.cpu_s) for r in results)
    worst_rss = max(r.hwm_mb for r in results)
    cpu_ok = "met" if worst_cpu < CPU_GOAL_PERCENT else "MISSED"
    rss_ok = "met" if worst_rss < RSS_GOAL_MB else "MISSED"
    print(f"\ngoal < {CPU_GOAL_PERCENT:.0f} % of a core: {cpu_ok} ({worst_cpu:.2f} %)")
    print(f"goal < {RSS_GOAL_MB:.0f} MB RSS (peak, VmHWM): {rss_ok} ({worst_rss:.1f} MB)")
    print(
        "CPU % = daemon's utime+stime / wall time over the measurement, all threads (10 ms"
        " ticks).\npulse % is the PulseAudio server standing in for the USB microphone's driver;"
        " paplay is the test's sound source. Neither runs on a tower.\n"
        "The ALSA file device (tests/MICROPHONES.md recipe 1) cannot give these numbers: it"
        " has no clock and delivers audio thousands of times faster than real time, so the"
        " daemon runs flat out on it (a busy core); it serves functional tests only."
    )


if __name__ == "__main__":
    main()
