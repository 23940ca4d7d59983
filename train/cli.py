"""`corona-train`: inspect, fit, export, evaluate and synth on the workstation.

main() is the only place errors become text: every CoronaError, OSError or usage error is one
line on stderr and a non-zero exit, never a traceback. TensorFlow is imported only by the
commands that need it, with its logs quieted first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import click

from daemon import log as daemon_log
from daemon.analyse.physics import check_line_setting
from daemon.constants import WINDOW_S
from daemon.errors import CoronaError, DataError
from train import data, evaluation
from train import inspection as inspecting
from train.featurize import DEFAULT_CACHE_DIR, Progress
from train.synth import synthesize

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERNAL: Final = 70
"""EX_SOFTWARE: an error this program did not expect (a bug); still no traceback for the user."""
EXIT_INTERRUPTED: Final = 130
DEBUG_ENV: Final = "CORONA_DEBUG"
"""Set to 1 to let unexpected errors show their traceback (for bug reports)."""

PROG: Final = "corona-train"


def _quiet_tensorflow() -> None:
    # Must happen before TensorFlow is first imported anywhere in the process.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


_NATIVE_NOISE: Final = re.compile(
    r"^(INFO: Created TensorFlow Lite|fully_quantize:|WARNING: All log messages before absl|"
    r"[IWE]\d{4} [\d:. ]+\S+\.cc:\d+\]|Estimated count of arithmetic ops|"
    r"Summary on the non-converted ops|\s*$)"
)
"""Lines TensorFlow/LiteRT's C++ code prints on fd 2 whatever TF_CPP_MIN_LOG_LEVEL says."""


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Send fd 2 (C/C++ writers) to a temporary file while Python's sys.stderr keeps the real
    terminal; afterwards replay what was written there, minus TensorFlow's known chatter."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError):
        yield  # no usable fd 2 (embedded use): nothing to filter
        return
    python_stderr = sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(real), "w", buffering=1, encoding="utf-8", errors="replace")
        try:
            yield
        finally:
            sys.stderr.flush()
            sys.stderr.close()
            os.dup2(real, 2)
            os.close(real)
            sys.stderr = python_stderr
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                if not _NATIVE_NOISE.match(line):
                    python_stderr.write(line + "\n")
            python_stderr.flush()


class _LiveStderr:
    """Whatever sys.stderr is at write time (main() swaps it while filtering native output)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _say(text: str) -> None:
    click.echo(text, err=True)


def _cache_option(function: Any) -> Any:
    function = click.option(
        "--no-cache", is_flag=True, help="Do not read or write the feature cache."
    )(function)
    return click.option(
        "--cache",
        "cache_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_CACHE_DIR,
        show_default=True,
        help="Feature cache folder (keyed by file content and feature settings).",
    )(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress events on stderr.")
def cli(verbose: bool) -> None:
    """Train, export and evaluate corona-discharge models from labelled WAV recordings."""
    daemon_log.configure(
        level="info" if verbose else "error",
        fmt="auto",
        stream=_LiveStderr(),  # type: ignore[arg-type]
    )


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of an aligned table.")
@click.option("--window-s", type=float, default=None, help="Window length to check files against.")
def inspect(*, data_dir: Path, as_csv: bool, window_s: float | None) -> None:
    """Metadata of every labelled WAV in DATA_DIR, problems flagged, with summary lines."""
    dataset = data.discover(data_dir)
    table = inspecting.rows(dataset, window_s=window_s or WINDOW_S)
    if as_csv:
        click.echo(inspecting.as_csv(table), nl=False)
        for line in inspecting.summary(dataset, table):
            _say(line)
    else:
        click.echo(inspecting.aligned(table))
        click.echo()
        for line in inspecting.summary(dataset, table):
            click.echo(line)
    unreadable = inspecting.unreadable_count(table)
    if unreadable:
        # Exit 1, like a failed check: a script that gates fit on inspect must notice.
        raise click.exceptions.Exit(EXIT_ERROR)


@cli.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="RUN_DIR to write the model, metrics and plots into.",
)
@click.option(
    "--preset",
    type=click.Choice(["seed", "default", "bands", "rowmeans"]),
    default="default",
    show_default=True,
    help="seed: the notebook exactly; default: the physics block; bands: physics block +"
    " gain-free spectrum bands; rowmeans: the 513 log row means only (the old default).",
)
@click.option(
    "--line-hz",
    type=click.Choice(["auto", "50", "60"]),
    default="auto",
    show_default=True,
    help="Grid frequency of the physics values (auto: the stronger evidence per window).",
)
@click.option(
    "--cv",
    "cv_folds",
    type=click.IntRange(min=2),
    default=None,
    help="Also cross-validate with K folds over files.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Repeat the K-fold cross-validation R times with different shuffles.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seeds the split (random_state) and the training.",
)
@click.option(
    "--strict", is_flag=True, help="Stop at the first unreadable file instead of skipping."
)
@click.option(
    "--window-s",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Window length in seconds (default 30, the daemon's).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Override the preset's (maximum) number of epochs.",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option(
    "--normal-only",
    is_flag=True,
    help="Learn from the normal files only: a one-class model (anomalous files, if any, are"
    " scored for evaluation only). --preset, --cv and --epochs do not apply.",
)
@click.option(
    "--quantile",
    type=click.FloatRange(0.5, 0.999999),
    default=None,
    help="--normal-only: the threshold is this quantile of held-out normal distances"
    " (default 0.99: a 1 %% false-alarm rate per window).",
)
@_cache_option
@click.pass_context
def fit(
    ctx: click.Context,
    *,
    data_dir: Path,
    run_dir: Path,
    preset: str,
    cv_folds: int | None,
    repeats: int,
    seed: int,
    strict: bool,
    window_s: float | None,
    line_hz: str,
    epochs: int | None,
    no_plots: bool,
    normal_only: bool,
    quantile: float | None,
    cache_dir: Path,
    no_cache: bool,
) -> None:
    """Train a model on DATA_DIR (normal/ + anomalous/ or manifest.csv) into RUN_DIR."""
    _quiet_tensorflow()
    line = check_line_setting(line_hz if line_hz == "auto" else int(line_hz))
    if normal_only:
        _fit_normal_only(
            ctx,
            data_dir=data_dir,
            run_dir=run_dir,
            seed=seed,
            quantile=quantile,
            strict=strict,
            cache_dir=None if no_cache else cache_dir,
            window_s=window_s,
            line_hz=line,
        )
        return
    if quantile is not None:
        raise click.UsageError("--quantile applies to --normal-only fits only")
    # TensorFlow loads with these two; only the commands that train or convert pay for it.
    from train import fit as fitting
    from train import presets

    chosen = presets.get(preset)
    if epochs is not None:
        chosen = chosen.replace(epochs=epochs)
    report = fitting.fit(
        data_dir,
        run_dir,
        preset=chosen,
        seed=seed,
        cv_folds=cv_folds,
        cv_repeats=repeats,
        strict=strict,
        cache_dir=None if no_cache else cache_dir,
        window_s=window_s,
        line_hz=line,
        command=shlex.join([PROG, *sys.argv[1:]]),
        plots=not no_plots,
        say=_say,
    )
    if report.cv is not None:
        click.echo(_cv_table(report.cv))
        click.echo()
    counts = ", ".join(f"{n} {name}" for name, n in report.per_label.items())
    click.echo(
        f"trained {report.preset} on {report.train_files} of {report.files} files ({counts};"
        f" {report.files - report.train_files} kept for the test), {report.windows} windows;"
        f" {len(report.skipped)} skipped; {report.epochs_run} epochs"
    )
    click.echo(f"threshold {report.threshold:.4f}; test files (never seen in training):")
    click.echo(_metrics_table(report.test))
    click.echo(f"wrote {report.run_dir} in {report.seconds:.1f} s")


def _fit_normal_only(ctx: click.Context, *, quantile: float | None, **options: Any) -> None:
    """`fit --normal-only`: the one-class model of train/oneclass.py."""
    for name in ("preset", "cv_folds", "epochs", "repeats"):
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            flag = {"cv_folds": "cv"}.get(name, name)
            raise click.UsageError(f"--{flag} does not apply to --normal-only")
    from daemon.analyse.novelty import DEFAULT_QUANTILE
    from train import oneclass

    report = oneclass.fit_normal_only(
        quantile=DEFAULT_QUANTILE if quantile is None else quantile,
        command=shlex.join([PROG, *sys.argv[1:]]),
        say=_say,
        **options,
    )
    counts = ", ".join(f"{n} {name}" for name, n in report.per_label.items())
    click.echo(
        f"fitted one-class (normal only) on {report.files} files ({counts}), {report.windows}"
        f" windows; {len(report.skipped)} skipped"
    )
    click.echo("score 0.5 = the threshold distance; test part (never seen in the fit):")
    click.echo(_metrics_table(report.test))
    click.echo(f"wrote {report.run_dir} in {report.seconds:.1f} s")


def _value(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _metrics_table(result: dict[str, dict[str, Any]]) -> str:
    names = ("accuracy", "roc_auc", "pauc", "precision", "recall", "f1")
    lines = ["level   " + "".join(f"{n:>10}" for n in names) + "  confusion [[tn fp] [fn tp]]   n"]
    for level in ("window", "file"):
        metrics = result[level]
        lines.append(
            f"{level:<8}"
            + "".join(f"{_value(metrics.get(n)):>10}" for n in names)
            + f"  {metrics.get('confusion')!s:<28}{metrics.get('n')}"
        )
    return "\n".join(lines)


def _cv_table(cv: dict[str, Any]) -> str:
    names = ("accuracy", "roc_auc", "pauc", "precision", "recall", "f1")
    head = (
        f"cross-validation: {cv['folds']} folds x {cv['repeats']} repeats by file; "
        f"mean [{cv['interval']}]"
    )
    lines = [head, "level   " + "".join(f"{n:>22}" for n in names)]
    for level in ("window", "file"):
        cells = []
        for name in names:
            stat = cv[level][name]
            if stat["mean"] is None:
                cells.append("n/a")
            elif stat["low"] is None:
                cells.append(f"{stat['mean']:.3f}")
            else:
                cells.append(f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]")
        lines.append(f"{level:<8}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--tflite",
    is_flag=True,
    help="Export as TFLite (the only format, so optional; kept for the documented command).",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8", "float16", "none"]),
    default="int8",
    show_default=True,
    help="Post-training quantization.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Path of the .tflite file; NAME.json is written beside it.",
)
@click.option("--name", default=None, help="Model name in the metadata (default: file stem).")
def export(*, run_dir: Path, tflite: bool, quantize: str, out: Path, name: str | None) -> None:
    """Convert RUN_DIR's Keras model to TFLite, checked against Keras on held-out windows."""
    del tflite  # TFLite is the only format: the flag is accepted, not required
    _quiet_tensorflow()
    from train.export import export_tflite

    out.parent.mkdir(parents=True, exist_ok=True)
    report = export_tflite(run_dir, out, quantize=quantize, name=name)
    click.echo(report.summary())


@cli.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {window, file}.")
@click.option(
    "--strict", is_flag=True, help="Stop at the first unreadable file instead of skipping."
)
@_cache_option
def evaluate(
    *,
    model_path: Path,
    data_dir: Path,
    as_json: bool,
    strict: bool,
    cache_dir: Path,
    no_cache: bool,
) -> None:
    """Metrics of MODEL.tflite on labelled DATA_DIR, per window and per file (daemon runner)."""
    result = evaluation.evaluate_tflite(
        model_path, data_dir, strict=strict, cache_dir=None if no_cache else cache_dir, say=_say
    )
    for warning in result.warnings:
        _say(f"warning: {warning}")
    if as_json:
        click.echo(json.dumps({"window": result.metrics["window"], "file": result.metrics["file"]}))
        return
    click.echo(
        f"model {result.model_name} (threshold {result.threshold:.4f}) on {result.files} "
        f"files, {result.windows} windows; {len(result.skipped)} skipped"
    )
    click.echo(_metrics_table(result.metrics))


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--normal", type=click.IntRange(min=0), required=True, help="Number of normal files.")
@click.option(
    "--anomalous", type=click.IntRange(min=0), required=True, help="Number of anomalous files."
)
@click.option("--seed", type=int, required=True, help="Random seed (same seed, same audio).")
@click.option(
    "--min-s",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Shortest file in seconds.",
)
@click.option(
    "--max-s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Longest file in seconds.",
)
@click.option(
    "--backgrounds",
    "backgrounds_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of real recordings from scripts/fetch-recordings: its 'train' rows go under"
    " the clips (and every clip gets a random microphone response).",
)
@click.option(
    "--split",
    type=click.Choice(["train", "holdout"]),
    default="train",
    show_default=True,
    help="Which recordings of --backgrounds to use (holdout: for test sets only).",
)
def synth(
    *,
    out_dir: Path,
    normal: int,
    anomalous: int,
    seed: int,
    min_s: float,
    max_s: float,
    backgrounds_dir: Path | None,
    split: str,
) -> None:
    """Write synthetic labelled tower audio (normal/, anomalous/, manifest.csv) into OUT_DIR."""
    if min_s > max_s:
        raise click.BadParameter(f"--min-s {min_s:g} is longer than --max-s {max_s:g}")
    backgrounds = () if backgrounds_dir is None else _backgrounds(backgrounds_dir, split)
    progress = Progress(normal + anomalous, "synth")
    try:
        manifest = synthesize(
            out_dir,
            normal=normal,
            anomalous=anomalous,
            seed=seed,
            duration_s=(min_s, max_s),
            backgrounds=backgrounds,
            progress=lambda done, total: progress.advance(),
        )
    finally:
        progress.close()
    click.echo(f"wrote {normal} normal and {anomalous} anomalous files; manifest {manifest}")


def _backgrounds(folder: Path, split: str) -> tuple[Any, ...]:
    """The recordings of one split, loaded once (they are reused across clips)."""
    from daemon.listen.audio import load
    from train.recordings import load_manifest
    from train.synth.field import Background

    chosen = [r for r in load_manifest(folder) if r.split == split]
    if not chosen:
        raise DataError(f"{folder}: no '{split}' recordings in its manifest")
    return tuple(Background(name=str(r.path.name), samples=load(r.path)[0]) for r in chosen)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one exit per kind of failure
    """Run the CLI; returns the exit status (the console script passes it to sys.exit)."""
    _quiet_tensorflow()
    try:
        with _native_stderr_filtered():
            result = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else PROG
        _say(f"{where}: usage error: {exc.format_message()} (see {where} --help)")
        return EXIT_USAGE
    except click.ClickException as exc:
        _say(f"{PROG}: error: {exc.format_message()}")
        return exc.exit_code or EXIT_ERROR
    except click.Abort:
        _say(f"{PROG}: aborted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except CoronaError as exc:
        _say(f"{PROG}: error: {exc}")
        return EXIT_ERROR
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"{PROG}: error: {where}{exc.strerror or exc}")
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        _say(
            f"{PROG}: internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see where)"
        )
        return EXIT_INTERNAL
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
