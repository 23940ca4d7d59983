"""corona-control's command line: the control-room side (today `watch`).

The only place where errors become one line on stderr and an exit code; everything below raises.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import click

from daemon.errors import CoronaError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
PROG = "corona-control"


def watch_command(config_path: Path | None, prefix: str | None, once: bool, wait_s: float) -> int:
    """The body of `corona-control watch`, also behind the `corona-monitor watch` alias."""
    from control.watch import run_watch
    from daemon import config

    if isinstance(sys.stdout, io.TextIOWrapper):
        # The table is already escaped; this is the last guard, should an unprintable character
        # (or a terminal whose encoding lacks the ellipsis) get through: never a traceback.
        sys.stdout.reconfigure(errors="backslashreplace")
    settings = config.load(config_path)
    return run_watch(settings, prefix=prefix, once=once, wait_s=wait_s, out=sys.stdout)


@click.group()
@click.version_option(package_name="corona-monitor")
def cli() -> None:
    """The control room of corona-monitor: what every tower reports.

    \b
      corona-control serve [--config F]  collect into the database, serve the page and API
      corona-control user add NAME       a login for the page (password asked twice)
      corona-control watch [--once]      a live table of every node
      corona-control migrate             bring the database's schema up to date
      corona-control labels export DIR   labelled clips as a corona-train data set
      corona-control COMMAND --help      what each command does
    """


@cli.command()
@click.option("--prefix", default=None, help="Topic prefix (default: the config's mqtt.prefix).")
@click.option("--once", is_flag=True, help="Print the table once after a few seconds and exit.")
@click.option(
    "--wait-s", default=3.0, show_default=True, help="Seconds to collect before --once prints."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML configuration with the broker in its mqtt section (as corona-monitor's).",
)
@click.pass_context
def watch(
    ctx: click.Context, prefix: str | None, once: bool, wait_s: float, config_path: Path | None
) -> None:
    """A live table of every node under the prefix (status, verdict, alarm, capture, outbox)."""
    ctx.exit(watch_command(config_path, prefix, once, wait_s))


_CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="control.yaml (default: SQLite in the state folder, broker on localhost).",
)


@cli.command()
@_CONFIG_OPTION
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="auto: JSON unless stderr is a terminal.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
@click.pass_context
def serve(ctx: click.Context, config_path: Path | None, log_format: str, log_level: str) -> None:
    """Collect every node's messages into the database and serve the fleet's page and API."""
    from control import config
    from control.serve import run_serve
    from daemon import log

    log.configure(level=log_level, fmt=log_format)
    ctx.exit(run_serve(config.load(config_path)))


@cli.command()
@_CONFIG_OPTION
def migrate(config_path: Path | None) -> None:
    """Bring the database's schema up to this version (serve also does it when it starts)."""
    from control import config
    from control.store import backend
    from control.store import migrate as migrations

    settings = config.load(config_path)
    pool = backend.Pool(backend.parse_url(settings.database_url()))
    try:
        applied = migrations.migrate(pool)
        version = migrations.current_version(pool)
    finally:
        pool.close()
    where = pool.backend.display
    if applied:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
        click.echo(f"{where}: applied {names}; schema {version}")
    else:
        click.echo(f"{where}: schema {version}, up to date")


@cli.group()
def labels() -> None:
    """The labels engineers gave windows on the node pages."""


@labels.command("export")
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@_CONFIG_OPTION
def labels_export(dest: Path, config_path: Path | None) -> None:
    """Write the labelled windows' clips and manifest.csv into DEST, a corona-train data set."""
    from control import config
    from control.labels_export import export_labels
    from control.store import Store

    store = Store.open(config.load(config_path).database_url(), migrate_schema=False)
    try:
        result = export_labels(store, dest)
    finally:
        store.close()
    click.echo(
        f"{dest}: {result.exported} labelled clip(s) in manifest.csv"
        + (
            f"; {result.without_clip} label(s) without a fetched clip"
            if result.without_clip
            else ""
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: no traceback ever reaches the user."""
    try:
        # In non-standalone mode click returns ctx.exit()'s code instead of calling sys.exit.
        code = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"{PROG}: interrupted", err=True)
        return EXIT_INTERRUPTED
    except (CoronaError, OSError) as err:
        click.echo(f"{PROG}: {err}", err=True)
        return EXIT_FAILED
    return code if isinstance(code, int) else EXIT_OK


# -- user: logins for the web page (kept together, after main, so merges stay simple) --

_USER_CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="control.yaml naming the database (default: SQLite in the state folder).",
)


def read_password() -> str:
    """Twice, hidden, from a terminal; else the first line of stdin (for scripts)."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


@cli.group()
def user() -> None:
    """Logins for the web page (users and salted scrypt hashes in the database).

    \b
      corona-control user add NAME       a new login (password from the terminal or stdin)
      corona-control user passwd NAME    a new password (ends that user's sessions)
      corona-control user list           the users
    """


@user.command("add")
@click.argument("name")
@_USER_CONFIG
def user_add(name: str, config_path: Path | None) -> None:
    """Add the login NAME."""
    from control.sanitize import terminal_safe
    from control.web import auth, users

    auth.check_user_name(name)  # before the password is typed, twice, for nothing
    with users.open_store(config_path) as store:
        users.add(store, name, read_password())
    click.echo(f"user {terminal_safe(name, users.NAME_CELLS)} added")


@user.command("passwd")
@click.argument("name")
@_USER_CONFIG
def user_passwd(name: str, config_path: Path | None) -> None:
    """Set a new password for NAME."""
    from control.sanitize import terminal_safe
    from control.web import users

    with users.open_store(config_path) as store:
        users.require(store, name)  # before the password is typed
        users.passwd(store, name, read_password())
    click.echo(f"password of {terminal_safe(name, users.NAME_CELLS)} changed")


@user.command("list")
@_USER_CONFIG
def user_list(config_path: Path | None) -> None:
    """The users, one a line."""
    from control.web import users

    with users.open_store(config_path) as store:
        for name in users.names(store):
            click.echo(name)


if __name__ == "__main__":
    sys.exit(main())
