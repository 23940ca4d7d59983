"""corona-monitor's command line: the live daemon, --replay, check-config, baseline, clips (and
watch, an alias of corona-control's).

The only place where errors become one line on stderr and an exit code; everything below raises.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from daemon.errors import CoronaError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_CONFIG_HELP = "YAML configuration (default: built-in defaults, see config.yaml)."


class _MonitorGroup(click.Group):
    """Accepts the design's `corona-monitor --replay FILE [FILE ...]` as the `replay` command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--replay" in args:
            at = args.index("--replay")
            args = [*args[:at], "replay", *args[at + 1 :]]
        return super().parse_args(ctx, args)


def _config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help=_CONFIG_HELP,
    )(func)


def _resolve_config(ctx: click.Context, config_path: Path | None) -> Path | None:
    """A --config given after the command wins over one given before it."""
    if config_path is not None:
        return config_path
    parent = ctx.find_root().params.get("config_path")
    return parent if isinstance(parent, Path) else None


@click.group(cls=_MonitorGroup, invoke_without_command=True)
@_config_option
@click.version_option(package_name="corona-monitor")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """Listen to a high-voltage tower and publish normal/anomalous verdicts over MQTT.

    \b
      corona-monitor [--config PATH]             the daemon on the live microphone
      corona-monitor --replay FILE.wav [...]     the same pipeline on files (= replay)
      corona-monitor COMMAND --help              what each command below does
    """
    if ctx.invoked_subcommand is None:
        from daemon.service import run_live

        ctx.exit(run_live(config_path))


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--realtime", is_flag=True, help="Pace the files at 1x (default: as fast as possible)."
)
@_config_option
@click.pass_context
def replay(
    ctx: click.Context, files: tuple[Path, ...], realtime: bool, config_path: Path | None
) -> None:
    """Run the live pipeline on WAV files; one verdict JSON per line on stdout."""
    from daemon.replay import run_replay

    ctx.exit(run_replay(files, config_path=_resolve_config(ctx, config_path), realtime=realtime))


@cli.command("check-config")
@_config_option
@click.pass_context
def check_config(ctx: click.Context, config_path: Path | None) -> None:
    """Validate config and model, list inputs, try the broker; non-zero exit on a problem."""
    from daemon.check import run_check

    ctx.exit(run_check(_resolve_config(ctx, config_path)))


@cli.command()
@click.option("--prefix", default=None, help="Topic prefix (default: the config's mqtt.prefix).")
@click.option("--once", is_flag=True, help="Print the table once after a few seconds and exit.")
@click.option(
    "--wait-s", default=3.0, show_default=True, help="Seconds to collect before --once prints."
)
@_config_option
@click.pass_context
def watch(
    ctx: click.Context, prefix: str | None, once: bool, wait_s: float, config_path: Path | None
) -> None:
    """Moved: an alias of `corona-control watch` (the control room's live table)."""
    # The control room's package, imported only here and only when asked: the daemon's modules
    # never import it (tests/test_edge_imports.py).
    from control.cli import watch_command

    click.echo("corona-monitor watch is now `corona-control watch`; running that.", err=True)
    ctx.exit(watch_command(_resolve_config(ctx, config_path), prefix, once, wait_s))


@cli.group()
def baseline() -> None:
    """The on-site baseline this node learns of its own tower (status, reset, import)."""


def _echo(text: str) -> None:
    click.echo(text)


@baseline.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@_config_option
@click.pass_context
def baseline_status(ctx: click.Context, as_json: bool, config_path: Path | None) -> None:
    """Learning or ready, how much is learned, and whether it fits the configured model."""
    from daemon.baseline_cli import run_status

    ctx.exit(run_status(_resolve_config(ctx, config_path), as_json=as_json, say=_echo))


@baseline.command("reset")
@_config_option
@click.pass_context
def baseline_reset(ctx: click.Context, config_path: Path | None) -> None:
    """Forget what was learned (stop the daemon first); it learns again from its next window."""
    from daemon.baseline_cli import run_reset

    ctx.exit(run_reset(_resolve_config(ctx, config_path), say=_echo))


@baseline.command("import")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help="Replace an existing baseline.")
@click.option(
    "--all-windows",
    is_flag=True,
    help="Also learn windows the model calls anomalous (default: leave them out).",
)
@_config_option
@click.pass_context
def baseline_import(
    ctx: click.Context, folder: Path, replace: bool, all_windows: bool, config_path: Path | None
) -> None:
    """Learn from FOLDER's WAV recordings of this tower instead of waiting learn_h."""
    from daemon.baseline_cli import run_import

    ctx.exit(
        run_import(
            folder,
            _resolve_config(ctx, config_path),
            replace=replace,
            all_windows=all_windows,
            say=_echo,
        )
    )


@cli.group()
def clips() -> None:
    """Evidence clips: the FLAC audio of kept windows (list, export for corona-train)."""


@clips.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of text.")
@_config_option
@click.pass_context
def clips_list(ctx: click.Context, as_json: bool, config_path: Path | None) -> None:
    """Every clip in the clips folder, oldest first."""
    from daemon.clips_cli import run_list

    ctx.exit(run_list(_resolve_config(ctx, config_path), as_json=as_json, say=_echo))


@clips.command("export")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--since", default=None, help="Only windows that started at or after this ISO time.")
@click.option(
    "--label",
    type=click.Choice(["anomalous", "normal", "all"]),
    default="all",
    show_default=True,
    help="Only clips whose verdict had this label.",
)
@_config_option
@click.pass_context
def clips_export(
    ctx: click.Context, folder: Path, since: str | None, label: str, config_path: Path | None
) -> None:
    """Write FOLDER as a data set corona-train reads (manifest.csv + anomalous/, normal/)."""
    from daemon.clips_cli import run_export
    from daemon.evidence.export import LabelFilter

    chosen: LabelFilter = (
        "anomalous" if label == "anomalous" else "normal" if label == "normal" else "all"
    )
    ctx.exit(
        run_export(folder, _resolve_config(ctx, config_path), since=since, label=chosen, say=_echo)
    )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: no traceback ever reaches the user."""
    try:
        # Before any command imports sounddevice: ALSA aborts the process on a config it cannot
        # find, so that becomes an error line here instead (daemon.listen.alsa_env).
        from daemon.listen import alsa_env

        alsa_env.check()
        # In non-standalone mode click returns ctx.exit()'s code instead of calling sys.exit.
        code = cli.main(args=argv, prog_name="corona-monitor", standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("corona-monitor: interrupted", err=True)
        return EXIT_INTERRUPTED
    except CoronaError as err:
        click.echo(f"corona-monitor: {err}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        click.echo("corona-monitor: interrupted", err=True)
        return EXIT_INTERRUPTED
    except OSError as err:
        click.echo(f"corona-monitor: {err}", err=True)
        return EXIT_FAILED
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
