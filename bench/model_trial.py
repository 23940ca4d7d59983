"""Benchmark: what the trial load of a model (daemon.analyse.model_trial) costs a command.

Run from the repo root: python -m bench.model_trial [--repeats N] [MODEL.tflite ...] (default:
the shipped models/corona-demo.tflite). Prints the machine and, per model, the wall time and the
child's CPU time of N trials (each a fresh child; the per-process cache is bypassed), beside an
in-process Model.load + one score for comparison.
"""

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from bench.machine import machine_lines
from daemon.analyse import model_meta, model_trial
from daemon.analyse.model import Model

DEFAULT_MODEL = Path("models/corona-demo.tflite")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def trial_once(path: Path) -> tuple[float, float]:
    """(wall s, child CPU s) of one trial of the model at path."""
    content = path.read_bytes()
    meta = model_meta.validate(model_meta.read(path.with_suffix(".json")), source=path.name)
    model_trial._VERDICTS.clear()  # bypass the per-process cache: a fresh trial every time
    cpu = children_cpu_s()
    started = time.perf_counter()
    model_trial.check(path, content, meta)
    return time.perf_counter() - started, children_cpu_s() - cpu


def load_once(path: Path) -> float:
    started = time.perf_counter()
    model = Model.load(path)
    model.score_one(np.zeros(model.spec.width, np.float32))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*", type=Path, default=[DEFAULT_MODEL])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    for line in machine_lines():
        print(line)
    print()
    print("| model | trial wall s (median, max) | trial child CPU s (median) | in-process load s |")
    print("|---|---|---|---|")
    for path in args.models:
        load_once(path)  # warm the page cache and this process's imports
        runs = [trial_once(path) for _ in range(args.repeats)]
        walls = [wall for wall, _ in runs]
        cpus = [cpu for _, cpu in runs]
        load_s = statistics.median(load_once(path) for _ in range(args.repeats))
        print(
            f"| {path.name} | {statistics.median(walls):.3f}, {max(walls):.3f}"
            f" | {statistics.median(cpus):.3f} | {load_s:.4f} |"
        )


if __name__ == "__main__":
    main()
