"""Trial-load and trial-score a model in a child process before this process trusts it.

Why a child: LiteRT verifies a flatbuffer's layout, not its contents. A .tflite from elsewhere
whose NAME.json carries its sha256 (the hash proves the file is the one its supplier meant, not
that it is sane: whoever supplies the model supplies the hash) can crash the runtime natively,
SIGSEGV or SIGABRT (`free(): invalid pointer`), which no `except` can catch. So a child Python
loads the same bytes with the same runner (`Model.from_content`) and scores a neutral feature
row, a batch of one (as the daemon and replay score) and of two (a resize, as evaluate does),
and checks that every output is a probability. The parent turns whatever happened (a signal, a
Python error, a hang, a bad output) into one ModelError line naming the file.

The verdict is kept per (path, sha256, size, mtime, metadata) for the life of the process, so
a command that loads the same model twice pays once. The cost is one Python start-up plus the
runner's imports (numpy, structlog, LiteRT): see the README's Reliability section.

The child is `python -I -c BOOT`: isolated (no cwd, PYTHONPATH or user site), then given the
parent's sys.path, so it imports exactly the modules the parent would. It reads one JSON header
line and the model bytes on stdin (the bytes the parent checked, not a re-read of a file that
may have changed since) and writes one JSON line on a private copy of its stdout.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import structlog

from daemon.analyse import model_meta
from daemon.analyse.model_meta import ModelMetadata
from daemon.errors import ModelError, one_line

log = structlog.get_logger(__name__)

TRIAL_TIMEOUT_S: Final = 20.0
"""Longest a trial may take. It takes well under a second idle (README); 20 s leaves room for a
busy board at boot, and a model that hangs the runtime must not hang start-up for ever."""
TRIAL_ROWS: Final = 2
"""Rows of the trial's resized batch (after a batch of one)."""
PROBABILITY_SLACK: Final = 1e-5
"""float32 softmax and dequantization may step this far outside [0, 1]; a real fault is far out."""

_BOOT: Final = (
    "import json, sys\n"
    "header = json.loads(sys.stdin.buffer.readline())\n"
    "sys.path[:] = header['sys_path']\n"
    "from daemon.analyse.model_trial import child_main\n"
    "sys.exit(child_main(header))\n"
)

_Key = tuple[str, str, int, int, str]
_VERDICTS: dict[_Key, str | None] = {}
"""Per process: None = the model passed, else the refusal message."""


def check(
    path: Path, content: bytes, meta: ModelMetadata, *, timeout_s: float = TRIAL_TIMEOUT_S
) -> None:
    """Raise ModelError unless `content` (the .tflite at `path`, checked against `meta`) loads
    and scores in a child process; a verdict already reached in this process is reused."""
    key = _key(path, content, meta)
    if key not in _VERDICTS:
        _VERDICTS[key] = _trial(path, content, meta, timeout_s)
    refusal = _VERDICTS[key]
    if refusal is not None:
        raise ModelError(refusal)


def _key(path: Path, content: bytes, meta: ModelMetadata) -> _Key:
    # The metadata is part of the key: the trial reads the output column and width from it.
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = -1
    doc = json.dumps(meta.raw, sort_keys=True, default=str).encode()
    return (
        str(path.resolve()),
        meta.sha256,
        len(content),
        mtime,
        hashlib.sha256(doc).hexdigest(),
    )


def _trial(path: Path, content: bytes, meta: ModelMetadata, timeout_s: float) -> str | None:
    """None when the child scored the model sanely, else the one-line refusal (which the
    caller raises; it is logged here at info level only, with the time the trial took)."""
    name = path.name
    header = {"sys_path": sys.path, "path": str(path), "meta": meta.raw}
    started = time.monotonic()
    refusal: str | None
    try:
        done = subprocess.run(  # noqa: S603 - this interpreter and our own fixed code, no shell
            [sys.executable, "-I", "-c", _BOOT],
            input=json.dumps(header, default=str).encode("utf-8") + b"\n" + content,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        refusal = (
            f"model {name}: its trial load did not finish within {timeout_s:g} s"
            " (the TFLite runtime hangs on it)"
        )
    except OSError as exc:
        refusal = f"model {name}: its trial load could not start: {exc.strerror or exc}"
    else:
        refusal = _judge(name, done)
    seconds = round(time.monotonic() - started, 3)
    log.info("model_trial", model=name, passed=refusal is None, seconds=seconds)
    return refusal


def _judge(name: str, done: subprocess.CompletedProcess[bytes]) -> str | None:
    """The child's outcome as a refusal message, or None when it passed."""
    code = done.returncode
    if code < 0:
        return f"model {name} crashed the TFLite runtime ({_signal_name(-code)}) in a trial load"
    reply = _reply(done.stdout)
    if reply is None:
        said = _last_line(done.stderr)
        return f"model {name}: its trial load ended with exit status {code} and no verdict" + (
            f" ({said})" if said else ""
        )
    error = reply.get("error")
    if error is not None:
        return one_line(str(error)) or f"model {name}: its trial load failed"
    return None


def _reply(stdout: bytes) -> dict[str, Any] | None:
    """The child's one JSON object (the last line it wrote), or None."""
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return reply if isinstance(reply, dict) and ("ok" in reply or "error" in reply) else None


def _last_line(data: bytes) -> str:
    """What the child said last on stderr (why Python itself failed), as one printable line."""
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return one_line(lines[-1]) if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- the child ----------------------------------------------------------------------------------


def child_main(header: dict[str, Any]) -> int:
    """In the child: load and score the model on stdin, write one JSON line; exit status 0.

    Its fd 1 is pointed at fd 2 first, so anything else that writes there (native code, a
    stray print) cannot be taken for the reply, which goes to a private copy of fd 1.
    """
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    structlog.configure(processors=[_drop])  # the parent logs the verdict; the child says nothing
    content = sys.stdin.buffer.read()
    path = Path(header["path"])
    try:
        _score(path, header["meta"], content)
    except ModelError as err:
        reply: dict[str, Any] = {"error": str(err)}
    except Exception as exc:  # noqa: BLE001 - whatever the runtime raises is the verdict
        reply = {"error": f"model {path.name} cannot be loaded: {type(exc).__name__}: {exc}"}
    else:
        reply = {"ok": True}
    with os.fdopen(reply_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(reply) + "\n")
    return 0


def _score(path: Path, doc: dict[str, Any], content: bytes) -> None:
    """Load with the daemon's runner, score neutral rows; ModelError when an output is no
    probability."""
    from daemon.analyse.model import Model  # the runner imports this module: import it here

    meta = model_meta.validate(doc, source=path.with_suffix(".json").name)
    model = Model.from_content(path, meta, content)
    neutral = np.zeros((TRIAL_ROWS, model.spec.width), dtype=np.float32)
    outputs = np.concatenate([model.outputs(neutral[:1]), model.outputs(neutral)])
    finite = bool(np.all(np.isfinite(outputs)))
    if not finite or outputs.min() < -PROBABILITY_SLACK or outputs.max() > 1.0 + PROBABILITY_SLACK:
        shown = np.array2string(outputs[0], precision=4, threshold=4)
        raise ModelError(
            f"model {path.name}: scores a neutral feature row as {shown}, not probabilities"
            " in [0, 1]"
        )


def _drop(*_args: object) -> Any:
    raise structlog.DropEvent
