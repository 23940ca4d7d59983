"""daemon.evidence and daemon.deliver.clip_requests on real files: names, the sample history,
retention on a real 1 MiB tmpfs (total size, free-disk floor, age, a full disk), requests with
hostile ids (an audit hook records every path opened), and export read back by train.data.

The daemon end to end (live clips, MQTT, the CLI) is tests/test_clips.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest
import soundfile as sf
from structlog.testing import capture_logs

from daemon.deliver.clip_requests import ERROR_TOPIC, ClipServer, parse_request
from daemon.errors import DataError
from daemon.evidence import export, names
from daemon.evidence.names import Kind
from daemon.evidence.store import ClipStore, read_tags
from daemon.listen.history import SampleHistory, to_int16
from daemon.listen.windows import Windower
from tests.daemon_runs import noisy_clip
from tests.test_full_disk import fill, small_disk

__all__ = ["small_disk"]  # the fixture, imported for this module's tests

REPO: Final = Path(__file__).resolve().parent.parent
NODE: Final = "tower-7"
CLIP_S: Final = 0.5
KIB: Final = 1024


def clip_samples(seed: int, seconds: float = CLIP_S) -> np.ndarray:
    return to_int16(noisy_clip(seconds, seed=seed, amplitude=0.3))


def tags(seq: int, label: str, sensor: str = "ok") -> str:
    """A verdict JSON as the pipeline writes it into a clip (seq 0: not yet stamped)."""
    return json.dumps(
        {
            "node": NODE,
            "seq": 0,
            "window_start": f"2026-12-01T10:00:{seq % 60:02d}.000Z",
            "window_end": f"2026-12-01T10:00:{seq % 60:02d}.500Z",
            "label": label,
            "label_by": "classifier",
            "score": 0.9 if label == "anomalous" else 0.1,
            "threshold": 0.5,
            "sensor": sensor,
            "model": {"name": "m.tflite", "sha256": "ab" * 32},
        }
    )


def keep(store: ClipStore, seq: int, kind: Kind, *, label: str | None = None,
         sensor: str = "ok", seed: int | None = None) -> str | None:  # fmt: skip
    """Keep one clip as the pipeline does (prepare, then commit under its seq's name)."""
    staged = store.prepare(
        clip_samples(seed if seed is not None else seq),
        kind=kind,
        tags=tags(seq, label or kind, sensor),
    )
    if staged is None:
        return None
    name = names.clip_name(NODE, seq, f"2026-12-01T10:00:{seq % 60:02d}.000Z", kind)
    assert store.commit(staged, name)
    return name


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if names.parse(p.name) is not None)


def kept_seqs(store: ClipStore) -> list[int]:
    return [clip.name.seq for clip in store.entries()]


class TestNames:
    def test_round_trip(self) -> None:
        """A name made from a verdict parses back to its parts."""
        name = names.clip_name("tower 7/ü", 1764585000123456, "2026-12-01T10:00:05.123Z", "normal")
        assert name == "tower-7--_1764585000123456_20261201T100005123Z_normal.flac"
        parsed = names.parse(name)
        assert parsed is not None
        assert (parsed.seq, parsed.start, parsed.kind) == (1764585000123456, "20261201T100005123Z",
                                                           "normal")  # fmt: skip

    @pytest.mark.parametrize(
        "hostile",
        [
            "../../etc/passwd",
            "/etc/passwd",
            "tower-7_1_20261201T100005123Z_anomalous.flac/../../x",
            "../tower-7_1_20261201T100005123Z_anomalous.flac",
            "tower-7_1_20261201T100005123Z_anomalous.flac\x00",
            "tower-7_1_20261201T100005123Z_anomalous.flac\n",
            "\x1b[31mtower-7_1_20261201T100005123Z_anomalous.flac",
            "tower-7_1_20261201T100005123Z_anomalous.wav",
            "t" * 64 + "_" + "9" * 20 + "_20261201T100005123Z_anomalous.flac" + "x" * 10_000,
            "",
            None,
            7,
            ["tower-7_1_20261201T100005123Z_anomalous.flac"],
        ],
    )
    def test_refuses_anything_else(self, hostile: object) -> None:
        """Paths, control characters, other suffixes, huge strings and non-strings are no name."""
        assert names.parse(hostile) is None


class TestSampleHistory:
    @pytest.mark.parametrize("block", [97, 441, 4410, 30_000, 100_000])
    @pytest.mark.parametrize("hop_s", [0.5, 0.2])
    def test_holds_every_finished_window(self, block: int, hop_s: float) -> None:
        """For any block size and hop, every window the Windower finishes (and its tail) is held
        whole when it finishes, and equals the stream's samples."""
        samples = noisy_clip(3.3, seed=3)
        windower = Windower(length_s=0.5, hop_s=hop_s)
        history = SampleHistory(windower.length_samples)
        seen = 0
        for first in range(0, samples.shape[0], block):
            part = samples[first : first + block]
            finished = windower.push(part)
            history.append(part)
            for window in finished:
                got = history.samples(window.start_sample, window.end_sample)
                want = to_int16(samples[window.start_sample : window.end_sample])
                np.testing.assert_array_equal(got, want)
                seen += 1
        tail = windower.flush()
        assert tail is not None
        assert history.samples(tail.start_sample, tail.end_sample).shape[0] == tail.n_samples
        assert seen >= 5
        # It forgets: a window and two blocks at most are held.
        if samples.shape[0] > windower.length_samples + 2 * block:
            with pytest.raises(ValueError, match="not held"):
                history.samples(0, 10)


class TestRetention:
    def test_total_size_bound_oldest_first(self, small_disk: Path) -> None:
        """On a 1 MiB tmpfs with max_total 300 KiB: after every clip the folder is at most the
        bound, and what is left is always the newest clips (the oldest went first)."""
        store = ClipStore(small_disk / "clips", max_total_bytes=300 * KIB,
                          max_age_s=1e9, min_free_bytes=0)  # fmt: skip
        for seq in range(1, 41):
            assert keep(store, seq, "anomalous") is not None
            assert folder_bytes(store.folder) <= 300 * KIB
            seqs = kept_seqs(store)
            assert seqs == list(range(seqs[0], seq + 1)), seqs
        assert store.deleted > 20
        assert len(kept_seqs(store)) >= 5
        assert (store.count, store.bytes) == (len(store.entries()), folder_bytes(store.folder))

    def test_normal_samples_go_first_and_never_push_out_anomalous(self, small_disk: Path) -> None:
        """Normal samples are deleted before any anomalous clip, however old; a normal sample
        that only fits by deleting anomalous clips is skipped instead (logged once)."""
        store = ClipStore(small_disk / "clips", max_total_bytes=250 * KIB,
                          max_age_s=1e9, min_free_bytes=0)  # fmt: skip
        keep(store, 1, "anomalous")
        keep(store, 2, "normal")
        keep(store, 3, "normal")
        for seq in range(4, 20):
            keep(store, seq, "anomalous")
            kinds = [c.name.kind for c in store.entries()]
            if "normal" in kinds:
                assert 1 in kept_seqs(store), "an anomalous clip went before a normal one"
        assert "normal" not in [c.name.kind for c in store.entries()]
        before = kept_seqs(store)
        with capture_logs() as logs:
            assert keep(store, 20, "normal") is None
            assert keep(store, 21, "normal") is None
        assert kept_seqs(store) == before
        skipped = [e for e in logs if e["event"] == "clip_not_kept"]
        assert [e["cause"] for e in skipped] == ["max_total_full_of_anomalous"]

    def test_free_disk_floor(self, small_disk: Path) -> None:
        """With min_free 600 KiB on 1 MiB: the free space never ends below the floor after a clip;
        the oldest clips make room; once other files take the disk, clips are skipped with one
        log line, and kept again (one line) when space comes back."""
        floor = 600 * KIB
        store = ClipStore(small_disk / "clips", max_total_bytes=100 * 1024 * KIB,
                          max_age_s=1e9, min_free_bytes=floor)  # fmt: skip
        for seq in range(1, 30):
            assert keep(store, seq, "anomalous") is not None
            assert shutil.disk_usage(small_disk).free >= floor
        assert store.deleted > 10
        seqs = kept_seqs(store)
        assert seqs == list(range(seqs[0], 30))
        filler = fill(small_disk)
        with capture_logs() as logs:
            results = [keep(store, seq, "anomalous") for seq in range(30, 40)]
        assert results == [None] * 10
        assert store.entries() == []  # it deleted every clip trying, and still did not fit
        assert [e["cause"] for e in logs if e["event"] == "clip_not_kept"] == ["min_free"]
        assert not [p for p in store.folder.iterdir()], "a temporary file was left behind"
        filler.unlink()
        with capture_logs() as logs:
            assert keep(store, 40, "anomalous") is not None
        assert [e["event"] for e in logs] == ["clips_kept_again"]

    def test_read_only_disk_write_error_is_skipped(self, small_disk: Path) -> None:
        """A disk remounted read-only: the write fails (EROFS), the clip is skipped, nothing is
        left behind, one log line for any number of clips."""
        store = ClipStore(small_disk / "clips", max_total_bytes=100 * 1024 * KIB,
                          max_age_s=1e9, min_free_bytes=0)  # fmt: skip
        assert keep(store, 1, "anomalous") is not None
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        with capture_logs() as logs:
            assert [keep(store, seq, "anomalous") for seq in range(2, 7)] == [None] * 5
        assert [e["cause"] for e in logs if e["event"] == "clip_not_kept"] == ["EROFS"]
        assert kept_seqs(store) == [1]
        assert store.skipped == 5

    def test_usage_counts_earlier_runs(self, tmp_path: Path) -> None:
        """A new store (a restarted daemon) reports the clips already in the folder."""
        first = ClipStore(tmp_path / "clips", max_total_bytes=10**8, max_age_s=1e9,
                          min_free_bytes=0)  # fmt: skip
        keep(first, 1, "anomalous")
        keep(first, 2, "normal")
        later = ClipStore(tmp_path / "clips", max_total_bytes=10**8, max_age_s=1e9,
                          min_free_bytes=0)  # fmt: skip
        assert later.usage() == (2, folder_bytes(tmp_path / "clips"))

    def test_age_bound(self, tmp_path: Path) -> None:
        """Clips kept longer ago than max_age are deleted before the next clip is written."""
        store = ClipStore(tmp_path / "clips", max_total_bytes=100 * 1024 * KIB,
                          max_age_s=86400.0, min_free_bytes=0)  # fmt: skip
        for seq in (1, 2, 3):
            keep(store, seq, "anomalous")
        old = time.time() - 86400.0 - 60
        for clip in store.entries()[:2]:
            os.utime(clip.path, (old, old))
        keep(store, 4, "anomalous")
        assert kept_seqs(store) == [3, 4]

    def test_modes_whatever_the_umask(self, tmp_path: Path) -> None:
        """The folder is 0700 and each clip 0600 even under umask 0, and an existing folder is
        tightened to 0700."""
        folder = tmp_path / "clips"
        folder.mkdir(mode=0o777)
        folder.chmod(0o777)
        old = os.umask(0)
        try:
            store = ClipStore(folder, max_total_bytes=10**8, max_age_s=1e9, min_free_bytes=0)
            name = keep(store, 1, "anomalous")
        finally:
            os.umask(old)
        assert name is not None
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600

    def test_clip_is_the_samples_and_the_verdict(self, tmp_path: Path) -> None:
        """A kept clip reads back as exactly its int16 samples at 44.1 kHz, mono FLAC, with the
        verdict JSON as its comment."""
        store = ClipStore(tmp_path / "clips", max_total_bytes=10**8, max_age_s=1e9,
                          min_free_bytes=0)  # fmt: skip
        name = keep(store, 5, "anomalous", seed=11)
        assert name is not None
        path = store.folder / name
        data, rate = sf.read(path, dtype="int16")
        assert rate == 44100
        assert sf.info(path).format == "FLAC"
        np.testing.assert_array_equal(data, clip_samples(11))
        assert json.loads(read_tags(path))["label"] == "anomalous"


class _Sent:
    """A Sender that records what the server publishes (the MQTT path is in test_clips.py)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes | str]] = []

    def publish(self, topic_suffix: str, payload: bytes | str, *, qos: int = 1,
                retain: bool = False) -> int | None:  # fmt: skip
        self.messages.append((topic_suffix, payload))
        return len(self.messages)


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Every path Python opens, lists or stats via os.scandir while the list is recording
    (a CPython audit hook: hooks cannot be removed, so it records only while active)."""
    record: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event in ("open", "os.scandir", "os.listdir") and args:
            record.append(
                os.fsdecode(args[0]) if isinstance(args[0], str | bytes) else str(args[0])
            )

    sys.addaudithook(hook)
    yield record
    active[0] = False


class TestRequests:
    def make(self, tmp_path: Path, max_bytes: int = 10**7) -> tuple[ClipServer, _Sent, str]:
        store = ClipStore(tmp_path / "clips", max_total_bytes=10**8, max_age_s=1e9,
                          min_free_bytes=0)  # fmt: skip
        name = keep(store, 12, "anomalous")
        assert name is not None
        sent = _Sent()
        return ClipServer(store, sent, max_bytes=max_bytes), sent, name

    def test_by_id_and_by_seq(self, tmp_path: Path) -> None:
        """{"id": NAME} and {"seq": N} both get the file's exact bytes on clip/NAME."""
        server, sent, name = self.make(tmp_path)
        data = (tmp_path / "clips" / name).read_bytes()
        server.handle(json.dumps({"id": name}).encode())
        server.handle(b'{"seq": 12}')
        assert sent.messages == [(f"clip/{name}", data), (f"clip/{name}", data)]

    @pytest.mark.parametrize(
        "payload",
        [
            b'{"id": "../../etc/passwd"}',
            b'{"id": "/etc/passwd"}',
            json.dumps({"id": "../outside/tower-7_12_20261201T100012000Z_anomalous.flac"}).encode(),
            json.dumps(
                {"id": "\x1b]0;owned\x07tower-7_12_20261201T100012000Z_anomalous.flac"}
            ).encode(),
            json.dumps({"id": "a" * 5000}).encode(),
            b'{"id": "' + b"a" * 100_000 + b'"}',
            b"[" * 1000 + b"]" * 1000,
            b"\xff\xfe garbage",
            b'{"seq": -1}',
            b'{"seq": true}',
            b'{"seq": "12"}',
            b'"just a string"',
        ],
    )
    def test_hostile_requests_are_refused_without_touching_other_files(
        self, tmp_path: Path, payload: bytes, opened: list[str]
    ) -> None:
        """Path traversal, escape sequences, huge or malformed requests: one JSON error on
        clip/error, nothing sent, and nothing opened or listed outside the clips folder (an
        outside file with a valid clip name is never read)."""
        server, sent, _ = self.make(tmp_path)
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "tower-7_12_20261201T100012000Z_anomalous.flac").write_bytes(b"secret")
        opened.clear()
        server.handle(payload)
        assert len(sent.messages) == 1
        topic, body = sent.messages[0]
        assert topic == ERROR_TOPIC
        doc = json.loads(body)
        assert doc["error"]
        assert len(str(body)) < 400
        clips = str(tmp_path / "clips")
        assert all(path.startswith(clips) for path in opened), opened

    def test_symlink_with_a_clip_name_is_not_a_clip(self, tmp_path: Path) -> None:
        """A symlink in the folder named like a clip is not served (only regular files are)."""
        server, sent, _ = self.make(tmp_path)
        link = tmp_path / "clips" / "tower-7_99_20261201T100012000Z_anomalous.flac"
        link.symlink_to("/etc/passwd")
        server.handle(json.dumps({"id": link.name}).encode())
        assert [topic for topic, _ in sent.messages] == [ERROR_TOPIC]

    def test_too_large_and_unknown(self, tmp_path: Path) -> None:
        """A clip over max_publish_kb and a clip that is not there are refused by name."""
        server, sent, name = self.make(tmp_path, max_bytes=1024)
        server.handle(json.dumps({"id": name}).encode())
        server.handle(b'{"seq": 13}')
        errors = [json.loads(body) for _, body in sent.messages]
        assert errors[0]["id"] == name
        assert errors[0]["max_bytes"] == 1024
        assert errors[0]["bytes"] > 1024
        assert errors[1]["seq"] == 13
        assert "no such clip" in errors[1]["error"]

    def test_queued_through_offer(self, tmp_path: Path) -> None:
        """paho's thread offers, the service loop serves: a 100 kB request is refused like a
        long one (only its head is queued), beyond the queue's room requests are dropped."""
        server, sent, name = self.make(tmp_path)
        server.offer(b'{"id": "' + b"a" * 100_000 + b'"}')
        server.offer(json.dumps({"id": name}).encode())
        assert server.serve() == 2
        assert [topic for topic, _ in sent.messages] == [ERROR_TOPIC, f"clip/{name}"]
        assert "longer" in json.loads(sent.messages[0][1])["error"]
        for _ in range(100):
            server.offer(b'{"seq": 12}')
        assert server.serve() == 16
        assert server.dropped == 84

    def test_parse(self) -> None:
        """A request is an id (a clip name) or a positive seq."""
        assert isinstance(parse_request(b'{"seq": 0}'), str)
        assert not isinstance(parse_request(b'{"seq": 5}'), str)


class TestExport:
    def test_folder_corona_train_reads(self, tmp_path: Path) -> None:
        """Anomalous and normal clips go to anomalous/ and normal/ with manifest.csv (the
        verdict's metadata), sensor faults to unlabelled/; train.data discovers both classes
        with the right labels and `corona-train inspect` reads every file."""
        store = ClipStore(tmp_path / "clips", max_total_bytes=10**8, max_age_s=1e9,
                          min_free_bytes=0)  # fmt: skip
        keep(store, 1, "anomalous")
        keep(store, 2, "normal")
        keep(store, 3, "normal", label="normal", sensor="silent")
        keep(store, 4, "anomalous")
        out = tmp_path / "export"
        result = export.export(store, out)
        assert (result.labelled, result.unlabelled) == (3, 1)
        from train import data

        dataset = data.discover(out)
        assert dataset.source == "manifest"
        assert dataset.per_label() == {"normal": 1, "anomalous": 2}
        assert sorted(f.name.split("/")[0] for f in dataset.files) == ["anomalous", "anomalous",
                                                                      "normal"]  # fmt: skip
        unlabelled = (out / export.UNLABELLED_MANIFEST).read_text().splitlines()
        assert len(unlabelled) == 2
        assert "unlabelled/" in unlabelled[1]
        assert ",silent," in unlabelled[1]
        done = subprocess.run([sys.executable, "-m", "train.cli", "inspect", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(".flac") == 3

    def test_filters_and_refusal(self, tmp_path: Path) -> None:
        """--label and --since select; a folder that is not empty is refused."""
        store = ClipStore(tmp_path / "clips", max_total_bytes=10**8, max_age_s=1e9,
                          min_free_bytes=0)  # fmt: skip
        for seq, kind in ((1, "anomalous"), (2, "normal"), (30, "anomalous")):
            keep(store, seq, kind)  # type: ignore[arg-type]
        assert export.export(store, tmp_path / "a", label="anomalous").labelled == 2
        since = export.parse_since("2026-12-01T10:00:10")
        assert export.export(store, tmp_path / "b", since=since).labelled == 1
        with pytest.raises(DataError, match="not an empty folder"):
            export.export(store, tmp_path / "a")
        with pytest.raises(DataError, match="--since"):
            export.parse_since("yesterday")


def test_flac_is_smaller_than_raw() -> None:
    """Not a bound the code relies on (sizes are measured before writing), a sanity check."""
    buffer = io.BytesIO()
    sf.write(buffer, clip_samples(1), 44100, format="FLAC", subtype="PCM_16")
    assert len(buffer.getvalue()) < clip_samples(1).nbytes
