"""Benchmark: real-time factor of `corona-monitor --replay` end to end, start-up included.

Run from the repository root: python -m bench.replay [--repeats N]. Synthesizes 1 h of audio
(train.synth.long_clip) into a 16-bit WAV (cached), replays it with the real CLI in a subprocess
(MQTT off, outbox in a temp dir) and times the notebook's librosa pipeline on the same file in
the same run. Prints the machine and a table: audio seconds per CPU second and per wall second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import soundfile as sf
import yaml

from bench.machine import machine_lines
from daemon.constants import HOP_LENGTH, N_FFT, SAMPLE_RATE, WINDOW_S

HOUR_S: Final = 3600.0
SYNTH_SEED: Final = 1
GOAL_X: Final = 2000.0
"""The issue's goal: replay at least 2000x real time end to end (audio s per CPU s)."""
STARTUP_CLIP_S: Final = 1.0
"""A replay of this much audio measures start-up (imports, config, model, outbox) alone."""
SHIPPED_MODEL: Final = Path("models/corona-demo.tflite")
CACHE_DIR: Final = Path(tempfile.gettempdir()) / "corona-bench"
MONITOR: Final = [sys.executable, "-m", "daemon.cli"]
_PATCHED_MONITOR: Final = (
    "import sys, daemon.listen.audio, daemon.replay; "
    "daemon.replay.REPLAY_BLOCK_S = float(sys.argv[1]); "
    "daemon.listen.audio.READ_SAMPLES = int(sys.argv[2]); "
    "from daemon.cli import main; sys.exit(main(sys.argv[3:]))"
)
"""Runs the CLI with other block sizes, for --sweep (the module constants are read at call time)."""


@dataclass(frozen=True)
class Timing:
    """One measured run."""

    label: str
    audio_s: float
    wall_s: float
    cpu_s: float
    peak_rss_mb: float | None = None
    page_faults: int | None = None

    @property
    def x_cpu(self) -> float:
        return self.audio_s / self.cpu_s

    @property
    def x_wall(self) -> float:
        return self.audio_s / self.wall_s


def synth_wav(seconds: float, seed: int, cache_dir: Path) -> Path:
    """The cached 16-bit WAV of long_clip(seconds, seed); synthesized on first use."""
    path = cache_dir / f"synth-{seconds:.0f}s-seed{seed}.wav"
    if path.exists():
        return path
    from train.synth import long_clip

    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"synthesizing {seconds:.0f} s of audio into {path} (once; about a minute)", flush=True)
    partial = path.with_suffix(".part.wav")
    sf.write(partial, long_clip(seconds, seed), SAMPLE_RATE, subtype="PCM_16")
    partial.replace(path)
    return path


def noise_wav(seconds: float, folder: Path) -> Path:
    path = folder / f"noise-{seconds:.0f}s.wav"
    rng = np.random.default_rng(SYNTH_SEED)
    sf.write(path, 0.1 * rng.standard_normal(round(seconds * SAMPLE_RATE)), SAMPLE_RATE, "PCM_16")
    return path


def bench_model(cache_dir: Path) -> Path:
    """models/corona-demo.tflite when shipped, else a tiny sigmoid model exported once (cached)."""
    if SHIPPED_MODEL.exists():
        return SHIPPED_MODEL.resolve()
    model = cache_dir / "bench-model.tflite"
    if model.exists() and model.with_suffix(".json").exists():
        return model
    from tests.fixtures.model_runs import build_sigmoid_log_run
    from train.export import export_tflite

    print(f"no {SHIPPED_MODEL}: exporting a test model to {model} (once)", flush=True)
    run = build_sigmoid_log_run(cache_dir / "model-run")
    export_tflite(run, model, quantize="none")
    return model


def write_config(folder: Path, model: Path) -> Path:
    doc = {
        "node_id": "bench",
        "model": {"path": str(model)},
        "mqtt": {"host": None},
        "outbox": {"path": str(folder / "outbox.sqlite"), "min_free_mb": 0},
        "logging": {"level": "info", "format": "json"},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def run_replay(
    label: str, config: Path, wav: Path, audio_s: float, patch: tuple[float, int] | None = None
) -> Timing:
    """Replay one file with the real CLI in a subprocess; CPU time is its user + sys time."""
    command = [*MONITOR]
    if patch is not None:
        command = [sys.executable, "-c", _PATCHED_MONITOR, str(patch[0]), str(patch[1])]
    command += ["--config", str(config), "--replay", str(wav)]
    (config.parent / "outbox.sqlite").unlink(missing_ok=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        # wait4: this child's own user + sys time, peak RSS and page faults.
        _, status, usage = os.wait4(child.pid, 0)
        wall_s = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise SystemExit(f"replay failed (exit {child.returncode}):\n{stderr[-2000:]}")
    verdicts = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    expected = max(1, int(audio_s // WINDOW_S))
    if len(verdicts) != expected:
        raise SystemExit(f"replay printed {len(verdicts)} verdicts, expected {expected}")
    return Timing(
        label,
        audio_s,
        wall_s,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
        usage.ru_minflt,
    )


def librosa_features(samples: np.ndarray) -> list[np.ndarray]:
    """The notebook's features: stft + |X|^2 + mean over frames, per 30 s window."""
    import librosa

    window_samples = round(WINDOW_S * SAMPLE_RATE)
    return [
        np.mean(
            np.abs(
                librosa.stft(
                    samples[first : first + window_samples],
                    n_fft=N_FFT,
                    hop_length=HOP_LENGTH,
                    center=True,
                    pad_mode="constant",
                )
            )
            ** 2,
            axis=1,
        )
        for first in range(0, samples.shape[0], window_samples)
    ]


def run_librosa(wav: Path, tiny: Path, audio_s: float) -> list[Timing]:
    """The notebook's pipeline in this process, timed in phases (CPU: time.process_time).

    librosa.load imports most of librosa's dependencies lazily on its first call, so a first
    call on a 1 s file is timed on its own (start-up), then load and features of the hour.
    """

    def timed(label: str, seconds: float, work: Callable[[], object]) -> tuple[Timing, object]:
        start_cpu, start = time.process_time(), time.perf_counter()
        result = work()
        cpu_s, wall_s = time.process_time() - start_cpu, time.perf_counter() - start
        return Timing(label, seconds, wall_s, cpu_s), result

    def warm_up() -> None:
        import librosa

        librosa_features(librosa.load(tiny, sr=SAMPLE_RATE)[0])

    def load() -> np.ndarray:
        import librosa

        samples: np.ndarray = librosa.load(wav, sr=SAMPLE_RATE)[0]
        return samples

    startup, _ = timed("  librosa import + first load/stft (1 s)", STARTUP_CLIP_S, warm_up)
    loading, samples = timed("  librosa.load (warm)", audio_s, load)
    features, _ = timed(
        "  stft + |X|^2 + mean per 30 s (features alone)",
        audio_s,
        lambda: librosa_features(np.asarray(samples)),
    )
    total = Timing(
        "librosa: the three rows below (notebook)",
        audio_s,
        startup.wall_s + loading.wall_s + features.wall_s,
        startup.cpu_s + loading.cpu_s + features.cpu_s,
    )
    return [total, startup, loading, features]


def best(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda timing: timing.cpu_s)


def row(timing: Timing, runs: list[Timing] | None = None) -> str:
    spread = ""
    if runs is not None and len(runs) > 1:
        median_x = statistics.median(run.x_cpu for run in runs)
        spread = f"   (median of {len(runs)}: {median_x:.0f}x)"
    rss = f"{timing.peak_rss_mb:7.0f}" if timing.peak_rss_mb is not None else "      -"
    faults = f"{timing.page_faults:8d}" if timing.page_faults is not None else "       -"
    return (
        f"{timing.label:44s} {timing.audio_s:7.0f} {timing.wall_s:8.2f} {timing.cpu_s:7.2f}"
        f" {timing.x_cpu:8.0f}x {timing.x_wall:8.0f}x {rss} {faults}{spread}"
    )


HEADER: Final = (
    f"{'':44s} {'audio s':>7s} {'wall s':>8s} {'CPU s':>7s} {'x (CPU)':>9s} {'x (wall)':>9s}"
    f" {'RSS MB':>7s} {'minflt':>8s}"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=HOUR_S, help="audio to replay")
    parser.add_argument("--repeats", type=int, default=3, help="replay runs (best CPU shown)")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="WAV and model cache")
    parser.add_argument("--skip-librosa", action="store_true", help="no reference run")
    parser.add_argument(
        "--sweep",
        nargs="*",
        metavar="BLOCK_S:READ_SAMPLES",
        default=[],
        help="also replay with these daemon.replay.REPLAY_BLOCK_S /"
        " daemon.listen.audio.READ_SAMPLES",
    )
    args = parser.parse_args()

    machine = machine_lines()
    wav = synth_wav(args.seconds, SYNTH_SEED, args.cache)
    model = bench_model(args.cache)
    with tempfile.TemporaryDirectory(prefix="corona-bench-replay-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, model)
        tiny = noise_wav(STARTUP_CLIP_S, folder)
        startup = [
            run_replay("start-up only (replay of 1 s)", config, tiny, STARTUP_CLIP_S)
            for _ in range(args.repeats)
        ]
        replays = [
            run_replay("corona-monitor --replay (end to end)", config, wav, args.seconds)
            for _ in range(args.repeats)
        ]
        sweeps: list[tuple[Timing, list[Timing]]] = []
        for spec in args.sweep:
            block_s, read_samples = spec.split(":")
            patch = (float(block_s), int(read_samples))
            runs = [
                run_replay(
                    f"  replay, block {block_s} s, read {read_samples}",
                    config,
                    wav,
                    args.seconds,
                    patch,
                )
                for _ in range(args.repeats)
            ]
            sweeps.append((best(runs), runs))
        reference = [] if args.skip_librosa else run_librosa(wav, tiny, args.seconds)

    print("\n".join(machine))
    print(f"model: {model.name}; audio: {wav.name} (train.synth.long_clip, 16-bit PCM WAV)")
    print(f"replay: best of {args.repeats} by CPU time; x = audio seconds per second\n")
    print(HEADER)
    print(row(best(replays), replays))
    print(row(best(startup), startup))
    for timing, runs in sweeps:
        print(row(timing, runs))
    for timing in reference:
        print(row(timing))
    verdict = "met" if best(replays).x_cpu >= GOAL_X else "MISSED"
    print(f"\ngoal >= {GOAL_X:.0f}x real time end to end (CPU): {verdict}")
    if reference:
        total, features = reference[0], reference[-1]
        print(
            f"replay end to end is {total.cpu_s / best(replays).cpu_s:.2f}x as fast as the"
            f" notebook's pipeline and {features.cpu_s / best(replays).cpu_s:.2f}x as fast as"
            " its feature path alone (CPU)"
        )


if __name__ == "__main__":
    main()
