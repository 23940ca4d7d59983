"""The control room's database (SQLite or PostgreSQL): see store.py."""

from control.store.backend import StoreError
from control.store.store import AckError, Store, UserExistsError

__all__ = ["AckError", "Store", "StoreError", "UserExistsError"]
