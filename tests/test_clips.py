"""Evidence clips end to end: the live daemon as a process on the ALSA file microphone, a real
mosquitto, a real 1 MiB tmpfs, and `corona-monitor clips export` read by `corona-train inspect`.

The file microphone delivers the clip written to it, then zeros (silent windows: normal by the
sensor rule). The unit side (retention bounds, hostile ids, export layout) is test_clip_store.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any, Final

import numpy as np
import paho.mqtt.publish as mqtt_publish
import soundfile as sf

from daemon import schemas
from daemon.constants import SAMPLE_RATE
from daemon.evidence.store import read_tags
from tests.daemon_runs import json_lines, noisy_clip, run_monitor, wait_until, write_wav
from tests.fixtures.live_daemon import EVENT_TIMEOUT_S, TOPICS, WINDOW_S, Rig, verdicts
from tests.fixtures.microphone import to_int16
from tests.test_full_disk import fill, small_disk

__all__ = ["small_disk"]  # the fixture, imported for this module's tests

CLIP_S: Final = 2.0
N_WINDOWS: Final = round(CLIP_S / WINDOW_S)
WINDOW_SAMPLES: Final = round(WINDOW_S * SAMPLE_RATE)
NO_NORMALS: Final = {"normal_every_n": 0, "min_free_mb": 0}


def wait_verdicts(rig: Rig, sub: Any, count: int, daemon: Any) -> list[dict[str, Any]]:
    wait_until(lambda: len(verdicts(sub.messages)) >= count, f"{count} verdicts",
               timeout_s=EVENT_TIMEOUT_S, process=daemon)  # fmt: skip
    return sorted(verdicts(sub.messages), key=lambda v: v["seq"])


class TestLiveClips:
    def test_anomalous_windows_keep_their_exact_audio(self, rig: Rig, tmp_path: Path) -> None:
        """Every window scored anomalous (threshold 0) keeps a FLAC clip beside the outbox whose
        samples are exactly the window's (the file microphone is int16, so equal), the verdict
        names it and validates, the clip carries the verdict; folder 0700, files 0600; silent
        windows after the clip keep none (normal_every_n 0). `clips export` then writes a folder
        corona-train's loader reads as these anomalous clips."""
        clip = noisy_clip(CLIP_S, seed=31, amplitude=0.3)
        rig.mic.write(clip)
        sub = rig.watch("verdict")
        cfg = rig.config(threshold=0.0, clips=NO_NORMALS)
        daemon = rig.start(cfg)
        got = wait_verdicts(rig, sub, N_WINDOWS + 2, daemon)
        folder = tmp_path / "clips"
        written = to_int16(clip)
        for index, verdict in enumerate(got[:N_WINDOWS]):
            schemas.validate("verdict", verdict)
            assert verdict["label"] == "anomalous"
            path = folder / verdict["clip"]
            assert path.is_file(), verdict["clip"]
            samples, rate = sf.read(path, dtype="int16")
            assert rate == SAMPLE_RATE
            window = written[index * WINDOW_SAMPLES : (index + 1) * WINDOW_SAMPLES]
            np.testing.assert_array_equal(samples, window)
            tags = json.loads(read_tags(path))
            assert (tags["window_start"], tags["score"]) == (verdict["window_start"],
                                                             verdict["score"])  # fmt: skip
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        silent = got[N_WINDOWS : N_WINDOWS + 2]
        assert [(v["sensor"], v["clip"]) for v in silent] == [("silent", None)] * 2

        out = tmp_path / "export"
        done = run_monitor(["clips", "export", str(out), "--config", str(cfg)])
        assert done.returncode == 0, done.stderr
        assert f"{N_WINDOWS} labelled" in done.stdout
        from train import data  # the loader corona-train uses (inspect: test_clip_store.py)

        dataset = data.discover(out)
        assert sorted(f.name for f in dataset.files) == sorted(
            f"anomalous/{v['clip']}" for v in got[:N_WINDOWS]
        )
        assert {f.label_name for f in dataset.files} == {"anomalous"}
        listed = run_monitor(["clips", "list", "--json", "--config", str(cfg)])
        assert [c["clip"] for c in json.loads(listed.stdout)] == [v["clip"] for v in
                                                                  got[:N_WINDOWS]]  # fmt: skip

    def test_normal_windows_are_sampled(self, rig: Rig, tmp_path: Path) -> None:
        """With nothing anomalous (threshold 1) and normal_every_n 3, the first normal window
        and every third after it keep a clip, the others none."""
        rig.mic.write(noisy_clip(CLIP_S, seed=32, amplitude=0.3))
        sub = rig.watch("verdict")
        clips = {"normal_every_n": 3, "min_free_mb": 0}
        daemon = rig.start(rig.config(threshold=1.0, clips=clips))
        got = wait_verdicts(rig, sub, 9, daemon)[:9]
        assert {v["label"] for v in got} == {"normal"}
        kept = [v["clip"] is not None for v in got]
        assert kept == [i % 3 == 0 for i in range(9)]
        for verdict in got[::3]:
            assert verdict["clip"].endswith("_normal.flac")
            assert (tmp_path / "clips" / verdict["clip"]).is_file()

    def test_full_disk_skips_clips_and_keeps_monitoring(self, rig: Rig, small_disk: Path) -> None:
        """Clips on a full 1 MiB tmpfs: every verdict still comes, with clip null, the daemon
        runs on, the cause is logged once and health counts the skipped clips."""
        fill(small_disk)
        rig.mic.write(noisy_clip(CLIP_S, seed=33, amplitude=0.3))
        sub = rig.watch()
        clips = {**NO_NORMALS, "path": str(small_disk / "clips")}
        daemon = rig.start(rig.config(threshold=0.0, clips=clips))
        got = wait_verdicts(rig, sub, N_WINDOWS, daemon)[:N_WINDOWS]
        assert [(v["label"], v["clip"]) for v in got] == [("anomalous", None)] * N_WINDOWS

        def health_skipped() -> bool:
            bodies = sub.bodies(f"{TOPICS}/health")
            return any(h["clips"]["skipped"] >= N_WINDOWS for h in bodies)

        wait_until(health_skipped, "health counting the skipped clips",
                   timeout_s=EVENT_TIMEOUT_S, process=daemon)  # fmt: skip
        events = daemon.events_named("clip_not_kept")
        assert len(events) == 1, events
        assert events[0]["cause"] in ("disk_full", "ENOSPC")
        assert daemon.process.poll() is None


class TestClipRequests:
    def test_request_returns_the_exact_flac(self, rig: Rig, tmp_path: Path) -> None:
        """{"id": NAME} and {"seq": N} on clip/request get the clip's exact bytes on clip/NAME
        (QoS 1, not retained); hostile ids get a JSON error on clip/error, and the file outside
        the clips folder named like a clip is never sent."""
        rig.mic.write(noisy_clip(CLIP_S, seed=34, amplitude=0.3))
        sub = rig.watch("verdict")
        replies = rig.watch("clip/#")
        daemon = rig.start(rig.config(threshold=0.0, clips=NO_NORMALS))
        first = wait_verdicts(rig, sub, 1, daemon)[0]
        name = first["clip"]
        data = (tmp_path / "clips" / name).read_bytes()
        outside = tmp_path / name.replace("_1", "_9", 1)
        outside.write_bytes(b"not for you")
        request = f"{TOPICS}/clip/request"
        broker = {"hostname": rig.broker.host, "port": rig.broker.port}
        for payload in (
            json.dumps({"id": name}),
            json.dumps({"seq": first["seq"]}),
            json.dumps({"id": f"../{outside.name}"}),
            json.dumps({"id": "../../etc/passwd"}),
            json.dumps({"id": "\x1b[2J" + name}),
            json.dumps({"id": "x" * 4000}),
        ):
            mqtt_publish.single(request, payload, qos=1, **broker)  # type: ignore[arg-type]

        def answered() -> list[Any]:
            return [m for m in replies.messages if m.topic != request]

        wait_until(lambda: len(answered()) >= 6, "six answers", timeout_s=EVENT_TIMEOUT_S,
                   process=daemon)  # fmt: skip
        sent = [m for m in replies.messages if m.topic == f"{TOPICS}/clip/{name}"]
        assert [m.payload for m in sent] == [data, data]
        assert all(m.qos == 1 and not m.retain for m in sent)
        errors = [m.json() for m in replies.messages if m.topic == f"{TOPICS}/clip/error"]
        assert len(errors) == 4
        assert all("not a clip name" in e["error"] or "longer" in e["error"] for e in errors)
        assert not any(m.payload == b"not for you" for m in replies.messages)
        assert len(answered()) == 6


class TestReplayClips:
    def test_replay_keeps_clips_only_when_asked(self, rig: Rig, tmp_path: Path) -> None:
        """Replay keeps no clips by default (clip null); with clips.in_replay its windows' clips
        are the file's samples, window by window."""
        samples = noisy_clip(CLIP_S, seed=35, amplitude=0.3)
        wav = write_wav(tmp_path / "in.wav", samples)
        plain = run_monitor(["--replay", str(wav), "--config",
                             str(rig.config(threshold=0.0, clips=NO_NORMALS))])  # fmt: skip
        assert plain.returncode == 0, plain.stderr
        assert [v["clip"] for v in json_lines(plain.stdout)] == [None] * N_WINDOWS
        assert not (tmp_path / "clips").exists()
        cfg = rig.config(threshold=0.0, clips={**NO_NORMALS, "in_replay": True})
        kept = run_monitor(["--replay", str(wav), "--config", str(cfg)])
        assert kept.returncode == 0, kept.stderr
        written, _ = sf.read(wav, dtype="int16")  # libsndfile's own float -> int16 rounding
        assert len(json_lines(kept.stdout)) == N_WINDOWS
        for index, verdict in enumerate(json_lines(kept.stdout)):
            clip, _ = sf.read(tmp_path / "clips" / verdict["clip"], dtype="int16")
            window = written[index * WINDOW_SAMPLES : (index + 1) * WINDOW_SAMPLES]
            np.testing.assert_array_equal(clip, window)


class TestCommandErrors:
    def test_one_line_and_status_1(self, tmp_path: Path) -> None:
        """A folder that is not empty and a bad --since are each one line on stderr, exit 1."""
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"outbox: {{path: {tmp_path / 'outbox.sqlite'}}}\n", encoding="utf-8")
        for args, says in (
            (["clips", "export", str(tmp_path / "full")], "not an empty folder"),
            (["clips", "export", str(tmp_path / "new"), "--since", "soon"], "--since"),
        ):
            done = run_monitor([*args, "--config", str(cfg)])
            assert done.returncode == 1
            assert says in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        listed = run_monitor(["clips", "list", "--config", str(cfg)])
        assert listed.returncode == 0
        assert listed.stdout.startswith("0 clips")
