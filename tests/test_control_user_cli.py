"""`corona-control user add|passwd|list` as real processes on a real SQLite store.

The password comes from stdin (a script's way) or, through a pseudo-terminal, from the prompt
(typed twice, hidden). Errors are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from control.store import Store
from control.web.auth import verify_password
from tests.watch_messages import CONTROL, REPO

PASSWORD = "a long enough password"
RUN_TIMEOUT_S = 60.0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "control.yaml"
    db = tmp_path / "state" / "control.db"
    path.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{db}"}}), encoding="utf-8")
    return path


def run(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONTROL, "user", *args, "--config", str(config)],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def stored_hash(config: Path, name: str) -> str | None:
    url = yaml.safe_load(config.read_text(encoding="utf-8"))["database"]["url"]
    store = Store.open(url)
    try:
        return store.password_hash(name)
    finally:
        store.close()


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("corona-control: ")
    return lines[0]


class TestAdd:
    def test_a_user_from_stdin(self, config: Path) -> None:
        """One line of stdin is the password; the database holds its salted scrypt hash."""
        done = run(config, "add", "night-shift", stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "user night-shift added\n"
        stored = stored_hash(config, "night-shift")
        assert stored is not None
        assert stored.startswith("scrypt$")
        assert PASSWORD not in stored
        assert verify_password(PASSWORD, stored)

    def test_a_user_that_exists_is_refused(self, config: Path) -> None:
        assert run(config, "add", "op", stdin=PASSWORD).returncode == 0
        line = one_error_line(run(config, "add", "op", stdin="another password"))
        assert "user op exists already" in line
        stored = stored_hash(config, "op")
        assert stored is not None
        assert verify_password(PASSWORD, stored)

    @pytest.mark.parametrize(
        ("name", "message"),
        [
            ("a" * 65, "user name: 1-64 characters, got 65"),
            ("op\x1b[2J", "user name: U+001B is not a printable character"),
            ("op\u202e", "user name: U+202E is not a printable character"),
            (" op", "user name: no spaces at the start or end"),
        ],
    )
    def test_a_bad_name_is_refused(self, config: Path, name: str, message: str) -> None:
        line = one_error_line(run(config, "add", name, stdin=PASSWORD))
        assert line == f"corona-control: {message}"
        assert "\x1b" not in line

    def test_a_short_or_empty_password_is_refused(self, config: Path) -> None:
        for password in ("", "short"):
            line = one_error_line(run(config, "add", "op", stdin=password + "\n"))
            assert line == "corona-control: password: at least 8 characters"
        assert stored_hash(config, "op") is None

    def test_an_unreadable_config_is_one_line(self, tmp_path: Path) -> None:
        config = tmp_path / "control.yaml"
        config.write_text("database: [not, a, mapping\n", encoding="utf-8")
        line = one_error_line(run(config, "add", "op", stdin=PASSWORD))
        assert "not valid YAML" in line

    def test_a_database_that_cannot_open_is_one_line(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder", encoding="utf-8")
        config = tmp_path / "control.yaml"
        url = f"sqlite:///{blocker / 'control.db'}"
        config.write_text(yaml.safe_dump({"database": {"url": url}}), encoding="utf-8")
        line = one_error_line(run(config, "add", "op", stdin=PASSWORD))
        assert "cannot open the database" in line


class TestPasswdAndList:
    def test_passwd_replaces_the_password(self, config: Path) -> None:
        assert run(config, "add", "op", stdin=PASSWORD).returncode == 0
        done = run(config, "passwd", "op", stdin="the new password\n")
        assert (done.returncode, done.stdout) == (0, "password of op changed\n")
        stored = stored_hash(config, "op")
        assert stored is not None
        assert verify_password("the new password", stored)
        assert not verify_password(PASSWORD, stored)

    def test_passwd_of_nobody(self, config: Path) -> None:
        assert one_error_line(run(config, "passwd", "nobody", stdin=PASSWORD)) == (
            "corona-control: no user nobody"
        )

    def test_list(self, config: Path) -> None:
        assert run(config, "list").stdout == ""
        for name in ("zoe", "anna", "Jörg"):
            assert run(config, "add", name, stdin=PASSWORD).returncode == 0
        assert run(config, "list").stdout.splitlines() == ["Jörg", "anna", "zoe"]


class TestTerminal:
    def test_the_password_is_typed_twice_hidden(self, config: Path) -> None:
        """On a terminal: asked twice, not echoed; a mismatch asks again."""
        master, slave = pty.openpty()
        process = subprocess.Popen(
            [*CONTROL, "user", "add", "op", "--config", str(config)],
            cwd=REPO,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,  # no controlling terminal: getpass reads this pty
            env={**os.environ, "PYTHONUTF8": "1"},
        )
        os.close(slave)
        seen = ""
        try:
            for prompt, answer in [
                ("Password: ", PASSWORD),
                ("Repeat for confirmation: ", "typo"),
                ("Password: ", PASSWORD),
                ("Repeat for confirmation: ", PASSWORD),
            ]:
                seen = read_until(master, seen, prompt)
                os.write(master, answer.encode() + b"\n")
            assert process.wait(timeout=RUN_TIMEOUT_S) == 0
            seen = read_rest(master, seen)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(master)
        assert "do not match" in seen
        assert "user op added" in seen
        assert PASSWORD not in seen  # never echoed
        stored = stored_hash(config, "op")
        assert stored is not None
        assert verify_password(PASSWORD, stored)


def read_until(fd: int, seen: str, text: str) -> str:
    """What the terminal showed, read until `text` appears once more than in `seen`."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    want = seen.count(text) + 1
    while seen.count(text) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} in {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            seen += os.read(fd, 4096).decode(errors="replace")
    return seen


def read_rest(fd: int, seen: str) -> str:
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            return seen
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the process closed its side
            return seen
        if not chunk:
            return seen
        seen += chunk.decode(errors="replace")
