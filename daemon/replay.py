"""`corona-monitor --replay`: files through the live pipeline, one verdict JSON per line on stdout.

The same Windower -> Model -> verdict -> outbox path as live capture; only the blocks come from
daemon.listen.audio.stream. Window times are the window's position in the file counted from
1970-01-01T00:00:00Z (a file has no wall clock); `file` and `offset_s` say the same plainly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

import structlog

from daemon import config
from daemon.analyse.alarm import Alarm
from daemon.analyse.baseline import Baseline
from daemon.analyse.model import Model
from daemon.constants import SAMPLE_RATE
from daemon.deliver.messenger import Messenger
from daemon.deliver.sinks import EchoSink, Sink
from daemon.errors import CoronaError
from daemon.evidence.store import ClipStore
from daemon.listen import audio
from daemon.pipeline import Pipeline, open_baseline, open_clips, start_up

log = structlog.get_logger(__name__)

REPLAY_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
REPLAY_BLOCK_S: Final = 10.0
"""Seconds of audio per block read from a file (bounded memory for any file length: 1.7 MB).

10 s rather than 1 s: 1 h replayed in 2.8 instead of 3.7 CPU s (bench/replay.py), mostly
because blocks above 1 MiB raise glibc's mmap threshold so the reader's per-block temporaries
stop being mmapped and page-faulted afresh (295k minor faults -> 13k). 60 s was no faster
and peaked at 106 MB RSS instead of 72."""
CONNECT_WAIT_S: Final = 3.0
"""How long replay waits for the broker before it starts (it stores and goes on regardless)."""
DRAIN_WAIT_S: Final = 10.0
"""How long replay waits at the end for the broker to acknowledge what it published."""


def run_replay(
    files: Sequence[Path], *, config_path: Path | None, realtime: bool, out: TextIO = sys.stdout
) -> int:
    """Replay each file; exit status 1 when any file could not be read (the others still run)."""
    settings, model = start_up(config_path)
    clips = open_clips(settings, replay=True)
    messenger = Messenger(settings, clips=clips)
    failed: list[str] = []
    try:
        messenger.start()
        if messenger.publisher is not None:
            messenger.publisher.wait_connected(CONNECT_WAIT_S)
        # The drainer's session starts on its first tick: tick before any verdict exists, so only
        # rows from earlier runs count as backlog (replayed: true), not this run's first block.
        messenger.pump()
        sink = EchoSink(messenger.sink, out)
        alarm = Alarm(k=settings.alarm.k, n=settings.alarm.n)
        baseline = open_baseline(settings, model, shared=True)
        for path in files:
            try:
                _replay_file(
                    path,
                    settings=settings,
                    model=model,
                    sink=sink,
                    alarm=alarm,
                    messenger=messenger,
                    realtime=realtime,
                    baseline=baseline,
                    clips=clips,
                )
            except CoronaError as err:
                log.error("replay_file_failed", file=str(path), error=str(err))
                failed.append(str(path))
        _finish_publishing(messenger)
    finally:
        messenger.close()
    if failed:
        log.error("replay_failed_files", count=len(failed), files=failed)
        return 1
    return 0


def _finish_publishing(messenger: Messenger) -> None:
    """Wait for the broker's acks; what it never got stays in the outbox for the next run."""
    if messenger.publisher is None:
        return
    if not messenger.connected:
        # Not an exit status: the files were read and every verdict printed. The verdicts are
        # safe in the outbox and the next run (replay or live) sends them, marked replayed.
        log.warning(
            "replay_not_published",
            depth=messenger.outbox.depth(),
            outbox=str(messenger.outbox.path),
            reason="not connected to the broker (see the mqtt_ events above)",
        )
    elif not messenger.drain(DRAIN_WAIT_S):
        log.warning("replay_unacknowledged", depth=messenger.outbox.depth())


def _replay_file(
    path: Path,
    *,
    settings: config.Settings,
    model: Model,
    sink: Sink,
    alarm: Alarm,
    messenger: Messenger,
    realtime: bool,
    baseline: Baseline | None,
    clips: ClipStore | None,
) -> None:
    pipeline = Pipeline(
        settings=settings,
        model=model,
        sink=sink,
        alarm=alarm,
        source="replay",
        stream_start=REPLAY_EPOCH,
        extra={"file": str(path)},
        baseline=baseline,
        clips=clips,
    )
    started = time.monotonic()
    fed_s = 0.0
    # Paced replay imitates the microphone: blocks of audio.block_s, so windows appear at 1x
    # rather than in bursts of a whole read block.
    block_s = settings.audio.block_s if realtime else REPLAY_BLOCK_S
    for block in audio.stream(path, block_frames=round(block_s * SAMPLE_RATE)):
        pipeline.feed(block)
        messenger.pump()
        fed_s += block.size / SAMPLE_RATE
        if realtime:
            ahead_s = fed_s - (time.monotonic() - started)
            if ahead_s > 0:
                time.sleep(ahead_s)
    pipeline.flush()
    messenger.pump()
    log.info("replay_file_done", file=str(path), windows=pipeline.stats.windows)
