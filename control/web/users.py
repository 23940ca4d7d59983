"""The logins behind `corona-control user add|passwd|list`: checked, hashed, stored.

The command line reads the password (terminal or stdin); everything here raises UserError with
a one-line message, the store's own failures included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from control import config
from control.sanitize import terminal_safe
from control.store import Store, StoreError, UserExistsError
from control.web.auth import UserError, check_password, check_user_name, hash_password

NAME_CELLS = 80


@contextmanager
def open_store(config_path: Path | None) -> Iterator[Store]:
    """The store control.yaml names (the default SQLite file without one)."""
    settings = config.load(config_path)
    try:
        store = Store.open(settings.database_url())
    except StoreError as err:
        raise UserError(str(err)) from None
    try:
        yield store
    except StoreError as err:
        raise UserError(str(err)) from None
    finally:
        store.close()


def add(store: Store, name: str, password: str) -> None:
    check_user_name(name)
    check_password(password)
    try:
        store.add_user(name, hash_password(password))
    except UserExistsError:
        shown = terminal_safe(name, NAME_CELLS)
        raise UserError(
            f"user {shown} exists already (`corona-control user passwd {shown}` sets a new"
            " password)"
        ) from None


def require(store: Store, name: str) -> None:
    if store.password_hash(name) is None:
        raise UserError(f"no user {terminal_safe(name, NAME_CELLS)}")


def passwd(store: Store, name: str, password: str) -> None:
    """A new password; the user's sessions end (every browser logged in as them)."""
    check_password(password)
    if not store.set_password(name, hash_password(password)):
        raise UserError(f"no user {terminal_safe(name, NAME_CELLS)}")


def names(store: Store) -> list[str]:
    """The users, each made safe for a terminal (the database may hold names from elsewhere)."""
    return [terminal_safe(name, NAME_CELLS) for name in store.users()]
