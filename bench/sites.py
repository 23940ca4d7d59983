"""The on-site baseline against the classifier, on sites built from real recordings.

    python -m bench.sites [--model models/corona-demo.tflite] [--one-class M.tflite]

Two scenarios, both from the `holdout` recordings of data/recordings (whole packages no model
trained on), both with another simulator's corona (bench/othersim.py) mixed into every other
30 s window, from 15 dB below the site to 10 dB above:

  site types  storm (rain, wind, storm, thunder), water and forest (birds, insects, fire):
              1 h of the site stitched from its recordings (train.recordings.storm_hour's
              crossfaded 4-30 s pieces) to learn from, then 30 min more with another seed
  recordings  the hard case: each recording alone is a site, learned from its first 60 %
              (looped to 1 h) and tested on its last 40 %, a part the baseline never heard

The baseline is the node's own (`daemon.analyse.baseline.Baseline.learn_all`, as `corona-monitor
baseline import` runs it). Printed per scenario: window ROC-AUC and pAUC (FPR <= 0.1) of the
baseline, the shipped classifier and a one-class model, then accuracy, false alarms and missed
corona of each `alarm.use` rule.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from bench import machine, othersim
from daemon.analyse.baseline import Baseline, novelty_vector
from daemon.analyse.model import Model
from daemon.analyse.physics import LineSetting
from daemon.constants import SAMPLE_RATE
from daemon.listen.audio import load
from daemon.listen.windows import Window, windows_of
from daemon.pipeline import decide
from train.metrics import partial_roc_auc, roc_auc
from train.recordings import Recording, load_manifest, storm_hour

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT / "data" / "recordings"
CLIP_S = 30.0
LEARN_WINDOWS = 120
LEARN_PART = 0.6


@dataclass
class Scores:
    """Per test clip: label and the scores of each detector."""

    labels: list[int] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    classifier: list[float] = field(default_factory=list)
    one_class: list[float] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)


def _piece(rng: np.random.Generator, samples: np.ndarray, n: int) -> np.ndarray:
    """n samples from a random offset, the recording looped when it is shorter."""
    looped = np.tile(samples, int(np.ceil(2 * n / max(samples.size, 1))) + 1)
    start = int(rng.integers(0, looped.size - n))
    return looped[start : start + n].astype(np.float64)


def _window(clip: np.ndarray) -> Window:
    return windows_of(clip.astype(np.float32), length_s=CLIP_S)[0]


SITES: Final = {
    "storm": frozenset({"rain", "wind", "storm", "thunder"}),
    "water": frozenset({"water"}),
    "forest": frozenset({"birds", "insects", "fire"}),
}
"""Site types built from held-out recordings of these categories."""
TEST_S: Final = 1800.0


def site_audio(recordings: list[Recording], seconds: float, seed: int) -> np.ndarray:
    """A continuous stretch of one site type: train.recordings.storm_hour's stitching (4-30 s
    pieces, crossfaded, levelled) over these recordings, whatever their category."""
    as_weather = [dataclasses.replace(r, category="rain") for r in recordings]
    return storm_hour(as_weather, seconds=seconds, seed=seed).astype(np.float64)


def _add(out: Scores, name: str, window: Window, label: int, *, baseline: Baseline,
         classifier: Model, one_class: Model | None, line: LineSetting) -> None:  # fmt: skip
    reading = baseline.observe(novelty_vector(window.physics, line), learn=False)
    out.labels.append(label)
    out.baseline.append(float(reading.score or 0.0))
    out.classifier.append(
        classifier.score_one(classifier.spec.vector(window.features, window.physics))
    )
    if one_class is not None:
        vector = one_class.spec.vector(window.features, window.physics)
        out.one_class.append(one_class.score_one(vector))
    out.sites.append(name)


def _with_corona(rng: np.random.Generator, clip: np.ndarray) -> np.ndarray:
    """Another simulator's corona, 15 dB below the clip to 10 dB above, at 50 or 60 Hz."""
    rms = float(np.sqrt(np.mean(clip**2))) or 1e-4
    level = 20 * np.log10(rms) + float(rng.uniform(-15.0, 10.0))
    line = float(rng.choice([50.0, 60.0]))
    return clip + othersim.corona(rng, clip.size, line_hz=line, level_dbfs=level)


def score_site_types(
    classifier: Model, one_class: Model | None, *, seed: int, work: Path
) -> Scores:
    """Each site type: a baseline from 1 h of it, then 30 min more of it (another seed), every
    other 30 s window with corona."""
    holdout = [r for r in load_manifest(RECORDINGS) if r.split == "holdout"]
    rng = np.random.default_rng(seed)
    n = round(CLIP_S * SAMPLE_RATE)
    line = classifier.spec.line_setting if classifier.spec.physics else "auto"
    out = Scores()
    for index, (name, categories) in enumerate(SITES.items()):
        members = [r for r in holdout if r.category in categories]
        gain = 10 ** (rng.uniform(-20, 10) / 20)
        learn = gain * site_audio(members, LEARN_WINDOWS * CLIP_S, seed + 2 * index)
        baseline = Baseline(work / f"{name}.npz", fingerprint={"site": name},
                            learn_windows=LEARN_WINDOWS, quantile=0.99)  # fmt: skip
        baseline.learn_all([novelty_vector(w.physics, line) for w in _windows(learn)])
        test = gain * site_audio(members, TEST_S, seed + 2 * index + 1)
        for k in range(int(TEST_S // CLIP_S)):
            clip = test[k * n : (k + 1) * n]
            label = k % 2
            if label:
                clip = _with_corona(rng, clip)
            _add(out, name, _window(np.clip(clip, -1, 1)), label, baseline=baseline,
                 classifier=classifier, one_class=one_class, line=line)  # fmt: skip
    return out


def _windows(samples: np.ndarray) -> list[Window]:
    return windows_of(samples.astype(np.float32), length_s=CLIP_S)


def score_recordings(
    classifier: Model, one_class: Model | None, *, seed: int, work: Path
) -> Scores:
    """The hard case: each held-out recording is a site learned from its first 60 % (looped to
    1 h) and tested on its last 40 %, a part of the sound the baseline never heard."""
    rng = np.random.default_rng(seed)
    n = round(CLIP_S * SAMPLE_RATE)
    out = Scores()
    line = classifier.spec.line_setting if classifier.spec.physics else "auto"
    for recording in [r for r in load_manifest(RECORDINGS) if r.split == "holdout"]:
        samples, _ = load(recording.path)
        cut = int(LEARN_PART * samples.size)
        learn_part, test_part = samples[:cut], samples[cut:]
        gain = 10 ** (rng.uniform(-20, 10) / 20)
        vectors = [
            novelty_vector(_window(gain * _piece(rng, learn_part, n)).physics, line)
            for _ in range(LEARN_WINDOWS)
        ]
        baseline = Baseline(work / f"{recording.path.stem}.npz",
                            fingerprint={"site": recording.path.name},
                            learn_windows=LEARN_WINDOWS, quantile=0.99)  # fmt: skip
        baseline.learn_all(np.asarray(vectors))
        for k in range(4):
            clip = gain * _piece(rng, test_part, n)
            if k % 2:
                clip = _with_corona(rng, clip)
            _add(out, recording.path.name, _window(np.clip(clip, -1, 1)), k % 2,
                 baseline=baseline, classifier=classifier, one_class=one_class,
                 line=line)  # fmt: skip
    return out


def rule_rows(scores: Scores, classifier_threshold: float) -> list[tuple[str, float, int, int]]:
    """(rule, accuracy, false alarms, missed corona) for each alarm.use rule."""
    from daemon.analyse.baseline import Reading

    rows = []
    labels = np.array(scores.labels)
    for rule in ("classifier", "baseline", "both", "either"):
        predicted = []
        for c, b in zip(scores.classifier, scores.baseline, strict=True):
            reading = Reading("ready", 0.0, b, 1, 1)
            label, _ = decide(rule, classifier=c >= classifier_threshold, reading=reading)  # type: ignore[arg-type]
            predicted.append(label == "anomalous")
        p = np.array(predicted)
        rows.append(
            (
                rule,
                float(np.mean(p == (labels == 1))),
                int(np.sum(p & (labels == 0))),
                int(np.sum(~p & (labels == 1))),
            )
        )
    return rows


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_tables(title: str, scores: Scores, classifier: Model, one_class: Model | None) -> None:
    labels = np.array(scores.labels)
    sites = len(set(scores.sites))
    print(f"{title}: {sites} sites, {len(labels)} windows of 30 s ({int(labels.sum())} with"
          " corona); baseline: 1 h of each site")  # fmt: skip
    print("| detector | ROC-AUC (30 s clips) | pAUC (FPR <= 0.1) |")
    print("|---|---|---|")
    detectors = [("on-site baseline (1 h)", scores.baseline),
                 (f"classifier {classifier.name}", scores.classifier)]  # fmt: skip
    if one_class is not None:
        detectors.append((f"one-class {one_class.name}", scores.one_class))
    for name, values in detectors:
        s = np.array(values)
        print(f"| {name} | {fmt(roc_auc(labels, s))} | {fmt(partial_roc_auc(labels, s))} |")
    print()
    print("| alarm.use | accuracy | false alarms (normal clips) | missed corona |")
    print("|---|---|---|---|")
    for rule, accuracy, false_alarms, missed in rule_rows(scores, classifier.threshold):
        print(f"| {rule} | {accuracy:.3f} | {false_alarms} of {int((labels == 0).sum())} |"
              f" {missed} of {int(labels.sum())} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "corona-demo.tflite")
    parser.add_argument("--one-class", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=2027)
    args = parser.parse_args()
    if not (RECORDINGS / "manifest.csv").is_file():
        raise SystemExit("sites: no data/recordings (run scripts/fetch-recordings first)")
    classifier = Model.load(args.model)
    one_class = Model.load(args.one_class) if args.one_class else None
    for line in machine.machine_lines():
        print(line)
    with tempfile.TemporaryDirectory(prefix="corona-sites-") as work:
        types = score_site_types(classifier, one_class, seed=args.seed, work=Path(work))
        print_tables("site types (storm, water, forest)", types, classifier, one_class)
        print()
        hard = score_recordings(classifier, one_class, seed=args.seed, work=Path(work))
        print_tables("single recordings, tested on a part never learned", hard, classifier,
                     one_class)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
