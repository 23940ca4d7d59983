"""The transfer test: train on one simulator seed, score audio the training never touched.

    python -m bench.robustness [--work DIR] [--train-files 200] [--models shipped,...]

One run builds (cached in --work):
  train  synth seed 4242, 100 normal + 100 anomalous (30-60 s), real `train` recordings under
         the clips (`corona-train synth --backgrounds`, when data/recordings exists)
  (a)    synth seed 777 with other settings (60-120 s files, no real backgrounds), and 60
         files of bench/othersim.py, an independently written simulator
  (b)    4 clips of 30 s from each `holdout` real recording (a whole package training never
         used), two of them with othersim's corona mixed in from 15 dB below the recording to
         10 dB above
  (c)    one continuous hour of holdout rain/wind/storm recordings (no corona), replayed
         through `corona-monitor --replay` with the alarm rule (k of n) applied to its verdicts

and prints one row per model: file ROC-AUC and accuracy on (a), (a'), (b), and anomalous
windows and alarm raises in (c). Models: the seed preset (float), rowmeans (the old
row-means-only default, int8), the default (float and int8), the bands ablation (int8), two
normal-only (one-class) models, fitted on the training set's normal files and on the normal
files of othersim-198 (198 files of the independent simulator, seed 555), and the shipped
models/corona-demo.tflite (--shipped: another model to compare). Scores come from
`corona-train evaluate`'s code (the daemon's runner). Then bench/sites.py's tables: the
on-site baseline, learned from one hour of each test site, against the shipped classifier
and the one-class model, and every `alarm.use` rule.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from bench import machine, othersim
from daemon.analyse.alarm import Alarm
from daemon.analyse.model import Model
from daemon.constants import SAMPLE_RATE

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "data" / "recordings"
PYTHON = sys.executable
TRAIN = [PYTHON, "-m", "train.cli"]


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """A command with its output captured; its stderr is shown when it fails."""
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"robustness: {' '.join(cmd[:4])} ... failed ({done.returncode})")
    return done


def have_recordings() -> bool:
    return (RECORDINGS / "manifest.csv").is_file()


def build_sets(work: Path, train_files: int) -> dict[str, Path]:
    """The data sets, each made once (delete a folder to remake it)."""
    sets = {
        "train": work / "train",
        "synth-777": work / "synth-777",
        "othersim": work / "othersim",
        "real-clips": work / "real-clips",
    }
    half = train_files // 2
    if not (sets["train"] / "manifest.csv").is_file():
        extra = ["--backgrounds", str(RECORDINGS)] if have_recordings() else []
        run([*TRAIN, "synth", str(sets["train"]), "--normal", str(half), "--anomalous",
             str(half), "--seed", "4242", *extra])  # fmt: skip
    if not (sets["synth-777"] / "manifest.csv").is_file():
        run([*TRAIN, "synth", str(sets["synth-777"]), "--normal", "40", "--anomalous", "40",
             "--seed", "777", "--min-s", "60", "--max-s", "120"])  # fmt: skip
    if not (sets["othersim"] / "manifest.csv").is_file():
        othersim.write_dataset(sets["othersim"], normal=30, anomalous=30, seed=31337)
    sets["othersim-198"] = work / "othersim-198"
    if not (sets["othersim-198"] / "manifest.csv").is_file():
        othersim.write_dataset(sets["othersim-198"], normal=99, anomalous=99, seed=555)
    if have_recordings() and not (sets["real-clips"] / "manifest.csv").is_file():
        real_clips(sets["real-clips"], seed=99)
    if not have_recordings():
        del sets["real-clips"]
    return sets


def _holdout() -> list[tuple[Path, str]]:
    from train.recordings import load_manifest

    return [(r.path, r.category) for r in load_manifest(RECORDINGS) if r.split == "holdout"]


def real_clips(out: Path, *, seed: int, clip_s: float = 30.0, per_recording: int = 4) -> None:
    """`per_recording` 30 s clips of every holdout recording (looped when shorter), from random
    offsets at random microphone gains; half of each recording's clips get corona mixed in,
    so every background is heard both with and without it."""
    from daemon.listen.audio import load

    rng = np.random.default_rng(seed)
    rows = ["file,label,source,category,corona_rel_db"]
    (out / "normal").mkdir(parents=True, exist_ok=True)
    (out / "anomalous").mkdir(parents=True, exist_ok=True)
    n = round(clip_s * SAMPLE_RATE)
    index = 0
    for path, category in _holdout():
        samples, _ = load(path)
        looped = np.tile(samples, int(np.ceil(2 * n / samples.shape[0])) + 1)
        for k in range(per_recording):
            start = int(rng.integers(0, looped.shape[0] - n))
            clip = looped[start : start + n].astype(np.float64)
            clip *= 10 ** (rng.uniform(-20, 10) / 20)  # microphone gain
            anomalous = k % 2 == 1
            rel = ""
            if anomalous:
                rms = float(np.sqrt(np.mean(clip**2))) or 1e-4
                rel_db = float(rng.uniform(-15.0, 10.0))
                line = float(rng.choice([50.0, 60.0]))
                level = 20 * np.log10(rms) + rel_db
                clip += othersim.corona(rng, n, line_hz=line, level_dbfs=level)
                rel = f"{rel_db:.1f}"
            label = "anomalous" if anomalous else "normal"
            name = f"{label}/clip_{index:04d}.wav"
            sf.write(out / name, np.clip(clip, -1, 1).astype(np.float32), SAMPLE_RATE,
                     subtype="PCM_16")  # fmt: skip
            rows.append(f"{name},{label},{path.name},{category},{rel}")
            index += 1
    (out / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def storm_hour(work: Path) -> Path | None:
    """One hour of real bad weather from holdout recordings, as a WAV (made once)."""
    path = work / "storm-hour.wav"
    if path.is_file() or not have_recordings():
        return path if path.is_file() else None
    from train.recordings import load_manifest
    from train.recordings import storm_hour as build

    holdout = [r for r in load_manifest(RECORDINGS) if r.split == "holdout"]
    sf.write(path, build(holdout, seconds=3600.0, seed=7), SAMPLE_RATE, subtype="PCM_16")
    return path


def train_models(work: Path, sets: dict[str, Path]) -> dict[str, Path]:
    """Fit and export each compared preset (made once)."""
    train_set = sets["train"]
    plans = {
        "seed preset, float": ("seed", "none", train_set),
        "rowmeans (old default), int8": ("rowmeans", "int8", train_set),
        "default (physics block), float": ("default", "none", train_set),
        "default (physics block), int8": ("default", "int8", train_set),
        "bands (physics + 8 gain-free bands), int8": ("bands", "int8", train_set),
        "one-class: normal files of the training set only, int8": (
            "one-class", "int8", train_set),
        "one-class: normal files of othersim-198 only, int8": (
            "one-class-o198", "int8", sets["othersim-198"]),
    }  # fmt: skip
    models = {}
    for label, (preset, quantize, data) in plans.items():
        run_dir = work / "runs" / preset
        if not (run_dir / "model.keras").is_file():
            how = ["--normal-only"] if preset.startswith("one-class") else ["--preset", preset]
            run([*TRAIN, "fit", str(data), "--out", str(run_dir), *how, "--no-plots"])
        out = work / "models" / f"{preset}-{quantize}.tflite"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_file():
            run([*TRAIN, "export", str(run_dir), "--tflite", "--quantize", quantize, "--out",
                 str(out)])  # fmt: skip
        models[label] = out
    return models


def file_metrics(model: Path, data: Path) -> dict[str, float | None]:
    done = run([*TRAIN, "evaluate", str(model), str(data), "--json"])
    result = json.loads(done.stdout)["file"]
    return {"auc": result["roc_auc"], "accuracy": result["accuracy"]}


def storm_replay(model: Path, wav: Path, work: Path) -> tuple[int, int, int]:
    """(windows, anomalous windows, alarm raises) of the storm hour through the daemon."""
    config = work / f"replay-{model.stem}.yaml"
    config.write_text(
        # Absolute: a config's relative paths resolve against the config's own folder.
        f"model: {{path: {model.resolve()}}}\n"
        f"outbox: {{path: {(work / 'outbox.sqlite').resolve()}}}\n"
        # The model alone is measured here; baselines have their own tables (bench/sites.py).
        "baseline: {enabled: false}\n"
        "logging: {level: error}\n",
        encoding="utf-8",
    )
    done = run(
        [PYTHON, "-m", "daemon.cli", "--config", str(config), "--replay", str(wav)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    verdicts = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    alarm = Alarm(k=3, n=5)  # the daemon's default rule (config.yaml alarm.k / alarm.n)
    raises = 0
    for v in verdicts:
        change = alarm.update(
            anomalous=v["label"] == "anomalous",
            usable=v["sensor"] == "ok",
            score=v["score"],
            at=v["window_end"],
        )
        raises += change is not None and change.state == "alarm"
    return len(verdicts), sum(v["label"] == "anomalous" for v in verdicts), raises


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "robustness")
    parser.add_argument("--train-files", type=int, default=200)
    parser.add_argument("--shipped", type=Path, default=ROOT / "models" / "corona-demo.tflite")
    args = parser.parse_args()
    work: Path = args.work.resolve()
    # Relative to the repository (the commands run there): run.json and model metadata record
    # the paths they were given, and a machine's layout does not belong in a shipped model.
    work = work.relative_to(ROOT) if work.is_relative_to(ROOT) else work
    work.mkdir(parents=True, exist_ok=True)
    sets = build_sets(work, args.train_files)
    storm = storm_hour(work)
    models = train_models(work, sets)
    models[f"shipped {args.shipped.name}"] = args.shipped
    columns = [name for name in ("synth-777", "othersim", "real-clips") if name in sets]
    for line in machine.machine_lines():
        print(line)
    print(f"training set: {sets['train']} (synth seed 4242"
          f"{', real train recordings underneath' if have_recordings() else ''})")  # fmt: skip
    header = "| model | " + " | ".join(f"{c} AUC | {c} acc" for c in columns)
    header += " | storm hour: anomalous windows | alarm raises |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(columns) + 2))
    for label, model in models.items():
        cells = []
        for column in columns:
            result = file_metrics(model, sets[column])
            cells += [fmt(result["auc"]), fmt(result["accuracy"])]
        if storm is not None:
            n, anomalous, raises = storm_replay(model, storm, work)
            cells += [f"{anomalous} of {n}", str(raises)]
        else:
            cells += ["n/a (no recordings)", "n/a"]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    if have_recordings():
        from bench import sites

        print()
        shipped = Model.load(args.shipped)
        one_class = Model.load(models["one-class: normal files of the training set only, int8"])
        with tempfile.TemporaryDirectory(prefix="corona-sites-") as folder:
            for title, score in (
                ("site types (storm, water, forest)", sites.score_site_types),
                ("single recordings, tested on a part never learned", sites.score_recordings),
            ):
                found = score(shipped, one_class, seed=2027, work=Path(folder))
                sites.print_tables(title, found, shipped, one_class)
                print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
