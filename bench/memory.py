"""Benchmark: the live daemon's memory under each ALSA configuration, against the stock one.

Run from the repository root: python -m bench.memory [--runs 3].
Each configuration starts `python -m daemon.cli --config CFG` on the ALSA file microphone
(tests/MICROPHONES.md, recipe 1) defined after that configuration's text, MQTT off, the
shipped model's 30 s windows, the config.yaml defaults for audio (0.1 s blocks, 10 s ring).
Once the daemon has scored WINDOWS windows (its health log says so) and SETTLE_S more have
passed, /proc/PID/status (VmRSS, VmHWM), /proc/PID/smaps_rollup (PSS, USS = private clean +
dirty) and /proc/PID/maps (the .so files) are read; then SIGTERM. The file microphone has no
clock, so the daemon runs flat out on it: this measures memory only (CPU: bench/live.py, on the
real-time PulseAudio sink).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from bench.machine import machine_lines
from bench.replay import CACHE_DIR, bench_model
from tests.daemon_runs import noisy_clip
from tests.fixtures.microphone import SYSTEM_ALSA_CONF, MicEnv, alsa_file_mic
from tests.procmem import BIG_LIBRARIES, ProcMemory, proc_memory

REPO: Final = Path(__file__).resolve().parent.parent
SHIPPED_ALSA_CONF: Final = REPO / "systemd" / "asound.conf"
SHIPPED_LABEL: Final = "shipped systemd/asound.conf"
MONITOR: Final = [sys.executable, "-m", "daemon.cli"]
CLIP_S: Final = 65.0
"""Two full 30 s windows of audio, then the microphone's silence."""
WINDOWS: Final = 2
SETTLE_S: Final = 2.0
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
POLL_S: Final = 0.05


@dataclass(frozen=True)
class AlsaSetup:
    label: str
    base: str
    """ALSA config text the microphone's PCMs are appended to."""
    env: dict[str, str]


def without_hooks(text: str) -> str:
    """alsa.conf with its top-level @hooks block (the conf.d loader) deleted."""
    kept: list[str] = []
    in_hooks = False
    for line in text.splitlines():
        if line.startswith("@hooks ["):
            in_hooks = True
        elif in_hooks:
            in_hooks = not line.startswith("]")
        else:
            kept.append(line)
    return "\n".join(kept) + "\n"


def setups() -> list[AlsaSetup]:
    stock = f"<{SYSTEM_ALSA_CONF}>\n"
    return [
        AlsaSetup("stock: alsa.conf + its conf.d hooks", stock, {}),
        AlsaSetup("stock + PA_ALSA_PLUGHW=1", stock, {"PA_ALSA_PLUGHW": "1"}),
        AlsaSetup(
            SHIPPED_LABEL,
            SHIPPED_ALSA_CONF.read_text(encoding="utf-8"),
            {},
        ),
        AlsaSetup(
            "alsa.conf copy, @hooks deleted",
            without_hooks(SYSTEM_ALSA_CONF.read_text(encoding="utf-8")),
            {},
        ),
        AlsaSetup("only the microphone (no alsa.conf)", "pcm.null { type null }\n", {}),
    ]


@dataclass(frozen=True)
class Run:
    memory: ProcMemory | None
    exit_code: int
    note: str


def write_config(folder: Path, model: Path, mic: MicEnv) -> Path:
    doc = {
        "node_id": "bench-memory",
        "audio": {"device": mic.device},
        "model": {"path": str(model)},
        # Health every second, logged even without a broker: it says how many windows are done.
        "mqtt": {"host": None, "health_interval_s": 1},
        "outbox": {"path": str(folder / "outbox.sqlite"), "min_free_mb": 0},
        "logging": {"level": "info", "format": "json"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def windows_logged(log_path: Path) -> int:
    """The largest `windows` count in the daemon's health log lines so far."""
    import json

    best = 0
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"health"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if event.get("event") == "health":
            best = max(best, int(event.get("windows", 0)))
    return best


def measure(setup: AlsaSetup, folder: Path, model: Path) -> Run:
    folder.mkdir(parents=True, exist_ok=True)
    clip = noisy_clip(CLIP_S, seed=31)
    with alsa_file_mic(folder / "mic", clip, base=setup.base) as mic:
        config = write_config(folder, model, mic)
        log_path = folder / "daemon.log"
        with log_path.open("wb") as log_file:
            child = subprocess.Popen(
                [*MONITOR, "--config", str(config)],
                env={**os.environ, **mic.env, **setup.env},
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            memory: ProcMemory | None = None
            note = ""
            try:
                deadline = time.monotonic() + START_TIMEOUT_S
                while windows_logged(log_path) < WINDOWS:
                    if child.poll() is not None:
                        break
                    if time.monotonic() > deadline:
                        note = f"no {WINDOWS} windows within {START_TIMEOUT_S:.0f} s"
                        break
                    time.sleep(POLL_S)
                else:
                    time.sleep(SETTLE_S)
                    memory = proc_memory(child.pid)
            finally:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
                try:
                    exit_code = child.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    child.kill()
                    exit_code = child.wait()
    if memory is None and not note:
        name = signal.Signals(-exit_code).name if exit_code < 0 else f"exit {exit_code}"
        note = f"daemon died at start ({name})"
    return Run(memory=memory, exit_code=exit_code, note=note)


def short_names(names: list[str]) -> str:
    """libasound_module_pcm_a52.so, ... -> "8 PCM modules (a52, ...)"; libx265.so.199 -> libx265."""
    modules = [n.removeprefix("libasound_module_pcm_").removesuffix(".so") for n in names
               if n.startswith("libasound_module_pcm_")]  # fmt: skip
    others = sorted({n.split(".so")[0] for n in names if not n.startswith("libasound_module_")})
    parts = [f"{len(modules)} PCM modules ({', '.join(modules)})"] if modules else []
    if others:
        parts.append(", ".join(others))
    return "; ".join(parts) or "none"


def fmt_range(values: list[float]) -> str:
    """Median, and the range when the runs differ by 0.1 MB or more."""
    med = statistics.median(values)
    if max(values) - min(values) < 0.1:
        return f"{med:.1f}"
    return f"{med:.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="daemon starts per configuration")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="model cache")
    args = parser.parse_args()

    machine = machine_lines(("numpy", "ai-edge-litert", "sounddevice", "structlog"))
    model = bench_model(args.cache)
    results: list[tuple[AlsaSetup, list[Run]]] = []
    with tempfile.TemporaryDirectory(prefix="corona-bench-memory-") as tmp:
        for number, setup in enumerate(setups()):
            runs = [
                measure(setup, Path(tmp) / f"{number}-{run}", model) for run in range(args.runs)
            ]
            results.append((setup, runs))

    print("\n".join(machine))
    alsa = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "libasound2", "libasound2-plugins",
         "libportaudio2"],
        capture_output=True, text=True, check=False,
    ).stdout.split("\n")  # fmt: skip
    print(f"ALSA packages: {', '.join(line for line in alsa if line)}")
    print(
        f"microphone: ALSA file PCM (unpaced), model {model.name}, MQTT off; measured after"
        f" {WINDOWS} windows + {SETTLE_S:.0f} s; {args.runs} daemon starts per configuration,"
        " median (range)\n"
    )
    reference: float | None = None
    shipped = next((runs for setup, runs in results if setup.label == SHIPPED_LABEL), [])
    shipped_libraries = frozenset().union(*(r.memory.libraries for r in shipped if r.memory))
    header = (
        f"| {'ALSA configuration':38s} | VmRSS MB | VmHWM MB | PSS MB | USS MB | vs stock"
        " | .so mapped | RSS in .so the shipped config does not map, MB | notable libraries |"
    )
    print(header)
    print("|" + "|".join("---" for _ in range(9)) + "|")
    for setup, runs in results:
        measured = [r.memory for r in runs if r.memory is not None]
        if not measured:
            print(f"| {setup.label:38s} | {runs[0].note} | | | | | | | |")
            continue
        rss = [m.vm_rss_mb for m in measured]
        if reference is None:
            reference = statistics.median(rss)
        delta = statistics.median(rss) - reference
        counts = sorted({len(m.libraries) for m in measured})
        notable = measured[0].notable()
        big = measured[0].maps_any(BIG_LIBRARIES)
        shown = short_names(notable)
        extra = [m.rss_outside(shipped_libraries) for m in measured]
        print(
            f"| {setup.label:38s} | {fmt_range(rss)} | {fmt_range([m.vm_hwm_mb for m in measured])}"
            f" | {fmt_range([m.pss_mb for m in measured])}"
            f" | {fmt_range([m.uss_mb for m in measured])} | {delta:+.1f}"
            f" | {'-'.join(map(str, counts))} | {fmt_range(extra)}"
            f" | {shown} ({len(big)} big) |"
        )
        failed = [r for r in runs if r.memory is None]
        if failed:
            print(f"|   ({len(failed)} run(s) failed: {failed[0].note}) |")
    print(
        "\nbig = libasound2-plugins' PCM modules, libavcodec, libx264/5, libpulse: what PortAudio's"
        " device probe maps\nand the daemon never uses. libjack is PortAudio's own (its JACK host"
        " API) under every configuration."
    )


if __name__ == "__main__":
    main()
