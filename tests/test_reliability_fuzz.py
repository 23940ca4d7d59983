"""Bad input, fuzzed: WAV files, YAML configs and model files from hypothesis.

Every case must end in a CoronaError subclass with a message, or in a valid result; any other
exception fails the test with hypothesis's smallest example. Runs are derandomized (the same
cases every run, so CI is reproducible) and use no example database. Each fuzz test counts its
own cases and fails when fewer than planned ran (`counted`), alone, with -k or in any order.
The README's Reliability section quotes the sum of the planned counts (5626 with the 26 files
of the replay test).

Not fuzzed here: a mutated .tflite whose metadata carries its new sha256. LiteRT verifies the
flatbuffer's layout but not its contents, and such models can crash the process inside the
runtime, so loading them in this process is unsafe: tests/test_model_trial.py runs seeded mutants
of that kind through corona-monitor processes, where the trial load in a child catches them.
The sha256 check against NAME.json is what these cases test.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import config
from daemon.analyse.model import Model
from daemon.constants import N_BINS
from daemon.errors import AudioError, ConfigError, CoronaError, ModelError
from daemon.listen import audio
from tests.daemon_runs import MONITOR, noisy_clip, write_config, write_wav

CASES: Counter[str] = Counter()
"""Cases run per fuzz test; `counted` reads its own test's count before and after."""


def fuzz(max_examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """hypothesis settings for this file: derandomized, no database, no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def count(test: str) -> None:
    CASES[test] += 1


def counted(test: str, planned: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Wrap a @given test: after hypothesis ran all its examples, at least `planned` of them
    must have reached the body (a strategy that filters everything out would pass silently)."""

    def decorate(run_examples: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(run_examples)  # keeps hypothesis's attributes and fixture signature
        def run(*args: Any, **kwargs: Any) -> None:
            before = CASES[test]
            run_examples(*args, **kwargs)
            ran = CASES[test] - before
            assert ran >= planned, f"{test}: {ran} of {planned} cases ran"

        return run

    return decorate


def expect_clear_error(error: type[CoronaError], run: Callable[[], Any]) -> Any:
    """run() returns a result, or raises `error` with a message; anything else propagates."""
    try:
        return run()
    except error as err:
        message, kind = str(err), type(err).__name__
    assert message.strip(), f"{kind} without a message"
    return None


# -- WAV files ---------------------------------------------------------------------------------

WAV_RANDOM = 400
WAV_MUTATED = 800
WAV_BUILT = 600
REPLAY_FILES = 24

_GOOD_WAV_S = 0.05


def good_wav_bytes(tmp: Path) -> bytes:
    path = write_wav(tmp / "good.wav", noisy_clip(_GOOD_WAV_S, seed=1))
    return path.read_bytes()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def good_wav(fuzz_dir: Path) -> bytes:
    return good_wav_bytes(fuzz_dir)


def load_wav(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    result = expect_clear_error(AudioError, lambda: audio.load(path))
    if result is not None:
        samples, _meta = result
        assert samples.dtype == np.float32
        assert samples.ndim == 1
        assert np.all(np.isfinite(samples))


mutations = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 63), st.integers(0, 10_000)),  # header bytes more often
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=8,
)


def mutate(data: bytes, changes: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for offset, value in changes:
        out[offset % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


@st.composite
def built_wavs(draw: st.DrawFn) -> bytes:
    """A RIFF/WAVE file from drawn header fields: plausible layout, implausible values."""
    fmt_tag = (
        draw(st.sampled_from([1, 3, 0xFFFE, 0, 2, 6, 7]))
        if draw(st.booleans())
        else draw(st.integers(0, 0xFFFF))
    )
    channels = draw(st.one_of(st.integers(0, 8), st.integers(0, 0xFFFF)))
    rate = draw(
        st.one_of(st.sampled_from([0, 1, 8000, 44100, 48000, 96000]), st.integers(0, 2**32 - 1))
    )
    bits = draw(st.one_of(st.sampled_from([0, 8, 16, 24, 32, 64]), st.integers(0, 0xFFFF)))
    block_align = draw(
        st.one_of(st.just(min(0xFFFF, max(1, channels * bits // 8))), st.integers(0, 0xFFFF))
    )
    body = draw(st.binary(max_size=2048))
    data_size = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    fmt = struct.pack(
        "<HHIIHH", fmt_tag, channels, rate, rate * block_align % 2**32, block_align, bits
    )
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_size)
    chunks += body
    riff_size = draw(st.one_of(st.just(4 + len(chunks)), st.integers(0, 2**32 - 1)))
    return b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + chunks


class TestWavFuzz:
    @counted("wav_random", WAV_RANDOM)
    @fuzz(WAV_RANDOM)
    @given(data=st.binary(min_size=1, max_size=4096))
    def test_random_bytes(self, fuzz_dir: Path, data: bytes) -> None:
        """Random bytes named .wav: AudioError with a message, or audio."""
        count("wav_random")
        load_wav(fuzz_dir / "random.wav", data)

    @counted("wav_mutated", WAV_MUTATED)
    @fuzz(WAV_MUTATED)
    @given(changes=mutations, cut=st.none() | st.integers(1, 10_000))
    def test_mutated_wav(
        self, fuzz_dir: Path, good_wav: bytes, changes: list[tuple[int, int]], cut: int | None
    ) -> None:
        """A valid WAV with bytes overwritten (mostly in the header) and maybe cut short."""
        count("wav_mutated")
        load_wav(fuzz_dir / "mutated.wav", mutate(good_wav, changes, cut))

    @counted("wav_built", WAV_BUILT)
    @fuzz(WAV_BUILT)
    @given(data=built_wavs())
    def test_built_headers(self, fuzz_dir: Path, data: bytes) -> None:
        """RIFF headers with drawn format, channels, rate, bits and chunk sizes."""
        count("wav_built")
        load_wav(fuzz_dir / "built.wav", data)


class TestReplayFuzz:
    def test_fuzzed_files_through_replay(
        self, tmp_path: Path, good_wav: bytes, exported: Callable[[str, str], Any]
    ) -> None:
        """corona-monitor --replay over mutated files and one good one: every file is either
        replayed or named in one error line, the good one gives verdicts, exit status 1, no
        traceback."""
        rng = np.random.default_rng(5)
        good = write_wav(tmp_path / "good.wav", noisy_clip(1.2, seed=2))
        files = [good]
        for k in range(REPLAY_FILES):
            changes = [
                (int(rng.integers(0, 64 if k % 2 else 4000)), int(rng.integers(0, 256)))
                for _ in range(int(rng.integers(1, 6)))
            ]
            cut = int(rng.integers(1, len(good_wav))) if k % 3 == 0 else None
            path = tmp_path / f"fuzz{k:02d}.wav"
            path.write_bytes(mutate(good_wav, changes, cut))
            files.append(path)
        (tmp_path / "noise.wav").write_bytes(rng.bytes(3000))
        files.append(tmp_path / "noise.wav")
        model = Path(exported("sigmoid", "int8").tflite_path)
        cfg = write_config(tmp_path, model, window={"length_s": 0.5})
        done = subprocess.run(
            [*MONITOR, "--config", str(cfg), "--replay", *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in done.stderr
        events = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
        failed = {e["file"] for e in events if e["event"] == "replay_file_failed"}
        replayed = {e["file"] for e in events if e["event"] == "replay_file_done"}
        assert failed | replayed == {str(f) for f in files}
        assert not failed & replayed
        assert all(e["error"] for e in events if e["event"] == "replay_file_failed")
        assert str(tmp_path / "noise.wav") in failed
        verdicts = [json.loads(x) for x in done.stdout.splitlines()]
        assert [v["file"] for v in verdicts[:2]] == [str(good)] * 2
        assert done.returncode == 1
        print(f"replay: {len(files)} files, {len(failed)} refused, {len(replayed)} replayed")


# -- YAML configs ------------------------------------------------------------------------------

CONFIG_STRUCTURED = 1200
CONFIG_TEXT = 500
CONFIG_BYTES = 400

KNOWN: Final = {
    "node_id": None,
    "audio": ["device", "sample_rate", "channels", "block_s", "ring_s"],
    "window": ["length_s", "hop_s"],
    "features": ["n_fft", "hop_length", "window", "center"],
    "model": ["path", "threshold"],
    "alarm": ["k", "n"],
    "mqtt": [
        "host",
        "port",
        "prefix",
        "qos",
        "keepalive_s",
        "username",
        "password_file",
        "password_env",
        "tls",
        "allow_insecure",
        "health_interval_s",
        "reconnect_max_s",
    ],
    "outbox": ["path", "max_rows", "min_free_mb"],
    "metrics": ["listen", "textfile"],
    "homeassistant": ["enabled", "discovery_prefix"],
    "logging": ["level", "format"],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-10, 70_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 5000),
    st.text(max_size=12),
    st.sampled_from(["hann", "debug", "json", "int8", "", " ", "~", "/dev/null", "tower_mic"]),
    st.dates(),
    st.binary(max_size=8),
)
keys = st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.floats())
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def config_docs(draw: st.DrawFn) -> dict[Any, Any]:
    """Known sections and keys with random values, plus unknown keys of any type."""
    doc: dict[Any, Any] = {}
    for section, fields in KNOWN.items():
        if not draw(st.booleans()):
            continue
        if fields is None or draw(st.integers(0, 9)) == 0:
            doc[section] = draw(values)
            continue
        body: dict[Any, Any] = {}
        for name in draw(st.lists(st.sampled_from(fields), max_size=4, unique=True)):
            body[name] = draw(values)
        if draw(st.integers(0, 4)) == 0:
            body[draw(keys)] = draw(values)
        doc[section] = body
    if draw(st.integers(0, 4)) == 0:
        doc[draw(keys)] = draw(values)
    return doc


def load_config(path: Path) -> None:
    result = expect_clear_error(ConfigError, lambda: config.load(path))
    assert result is None or isinstance(result, config.Settings)


class TestConfigFuzz:
    @counted("config_structured", CONFIG_STRUCTURED)
    @fuzz(CONFIG_STRUCTURED)
    @given(doc=config_docs())
    def test_structured(self, fuzz_dir: Path, doc: dict[Any, Any]) -> None:
        """Known and unknown keys with random scalar, list and mapping values."""
        count("config_structured")
        path = fuzz_dir / "structured.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        load_config(path)

    @counted("config_text", CONFIG_TEXT)
    @fuzz(CONFIG_TEXT)
    @given(
        text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,? \n\t0.~")), max_size=200)
    )
    def test_yaml_syntax(self, fuzz_dir: Path, text: str) -> None:
        """Text made of YAML's syntax characters: anchors, aliases, tags, flows, blocks."""
        count("config_text")
        path = fuzz_dir / "text.yaml"
        path.write_text(text, encoding="utf-8")
        load_config(path)

    @counted("config_bytes", CONFIG_BYTES)
    @fuzz(CONFIG_BYTES)
    @given(data=st.binary(max_size=1024))
    def test_raw_bytes(self, fuzz_dir: Path, data: bytes) -> None:
        """Random bytes as config.yaml."""
        count("config_bytes")
        path = fuzz_dir / "bytes.yaml"
        path.write_bytes(data)
        load_config(path)

    @pytest.mark.parametrize(
        "text",
        [
            "a: " + "[" * 5000 + "]" * 5000,
            "x:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 3000)),
            "1: 2\nx: 3\n",
            "~: 1\nx: 2\n",
            "node_id: 2001-13-45\n",
            "mqtt: &x {tls: *x}\n",
            "audio: &a [*a]\n",
            "!!python/object/apply:os.system ['true']\n",
        ],
        ids=[
            "deep-lists",
            "deep-maps",
            "mixed-keys",
            "null-key",
            "bad-date",
            "alias-loop",
            "self-list",
            "python-tag",
        ],
    )
    def test_found_by_fuzzing(self, tmp_path: Path, text: str) -> None:
        """Inputs that once escaped as RecursionError, TypeError or ValueError: now ConfigError."""
        path = tmp_path / "config.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(str(path))):
            config.load(path)


# -- model files -------------------------------------------------------------------------------

META_MUTATED = 800
META_BYTES = 300
TFLITE_RANDOM = 300
TFLITE_MUTATED = 300

META_PATHS: Final = [
    "format", "name", "created", "sha256", "classes", "output", "features", "window_s",
    "threshold", "quantization", "metrics", "trained_on", "features.sample_rate",
    "features.n_fft", "features.hop_length", "features.window", "features.center",
    "features.transform", "extra",
]  # fmt: skip
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=10)
    | st.sampled_from(["sigmoid", "softmax", "int8", "anomalous", "log10_power_mean"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@dataclass(frozen=True)
class ModelFiles:
    """A valid model's bytes and metadata (kept out of hypothesis's failure reports)."""

    content: bytes = field(repr=False)
    meta: dict[str, Any] = field(repr=False)


@pytest.fixture(scope="module")
def model_files(exported: Callable[[str, str], Any]) -> ModelFiles:
    source = Path(exported("sigmoid", "int8").tflite_path)
    return ModelFiles(source.read_bytes(), json.loads(source.with_suffix(".json").read_text()))


def load_model(folder: Path, content: bytes, meta: bytes) -> None:
    path = folder / "fuzzed.tflite"
    path.write_bytes(content)
    path.with_suffix(".json").write_bytes(meta)
    model = expect_clear_error(ModelError, lambda: Model.load(path))
    if model is not None:
        score = model.score(np.full(N_BINS, 1e-3, dtype=np.float32))
        assert 0.0 <= score <= 1.0


def apply_meta_change(doc: dict[str, Any], path: str, action: str, value: Any) -> None:
    parent: Any = doc
    *heads, leaf = path.split(".")
    for head in heads:
        if not isinstance(parent, dict) or not isinstance(parent.get(head), dict):
            return
        parent = parent[head]
    if action == "delete":
        parent.pop(leaf, None)
    else:
        parent[leaf] = value


class TestModelFuzz:
    @counted("meta_mutated", META_MUTATED)
    @fuzz(META_MUTATED)
    @given(
        changes=st.lists(
            st.tuples(st.sampled_from(META_PATHS), st.sampled_from(["delete", "set"]), json_values),
            min_size=1,
            max_size=4,
        )
    )
    def test_mutated_metadata(
        self,
        fuzz_dir: Path,
        model_files: ModelFiles,
        changes: list[tuple[str, str, Any]],
    ) -> None:
        """NAME.json with fields deleted or replaced by any JSON value, the .tflite intact."""
        count("meta_mutated")
        content, meta = model_files.content, model_files.meta
        doc = json.loads(json.dumps(meta))
        for path, action, value in changes:
            apply_meta_change(doc, path, action, value)
        load_model(fuzz_dir, content, json.dumps(doc).encode())

    @counted("meta_bytes", META_BYTES)
    @fuzz(META_BYTES)
    @given(data=st.binary(max_size=512), prefix=st.integers(0, 600))
    def test_metadata_bytes(
        self, fuzz_dir: Path, model_files: ModelFiles, data: bytes, prefix: int
    ) -> None:
        """NAME.json cut short and followed by random bytes (not UTF-8, not JSON)."""
        count("meta_bytes")
        content, meta = model_files.content, model_files.meta
        load_model(fuzz_dir, content, json.dumps(meta).encode()[:prefix] + data)

    @counted("tflite_random", TFLITE_RANDOM)
    @fuzz(TFLITE_RANDOM)
    @given(data=st.binary(min_size=0, max_size=2048))
    def test_random_tflite_with_matching_sha(
        self, fuzz_dir: Path, model_files: ModelFiles, data: bytes
    ) -> None:
        """Random bytes as the .tflite, the metadata vouching for them: the runtime refuses."""
        count("tflite_random")
        meta = model_files.meta
        doc = {**meta, "sha256": hashlib.sha256(data).hexdigest()}
        load_model(fuzz_dir, data, json.dumps(doc).encode())

    @counted("tflite_mutated", TFLITE_MUTATED)
    @fuzz(TFLITE_MUTATED)
    @given(changes=mutations, cut=st.none() | st.integers(1, 20_000))
    def test_mutated_tflite(
        self,
        fuzz_dir: Path,
        model_files: ModelFiles,
        changes: list[tuple[int, int]],
        cut: int | None,
    ) -> None:
        """A damaged .tflite beside its metadata: refused by the sha256 check, never loaded."""
        count("tflite_mutated")
        content, meta = model_files.content, model_files.meta
        load_model(fuzz_dir, mutate(content, changes, cut), json.dumps(meta).encode())

    @pytest.mark.parametrize(
        ("meta_text", "message"),
        [
            (b"\x80", "not UTF-8"),
            (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
            (None, "features.transform"),
        ],
        ids=["not-utf8", "deep-json", "list-transform"],
    )
    def test_found_by_fuzzing(
        self, tmp_path: Path, model_files: ModelFiles, meta_text: bytes | None, message: str
    ) -> None:
        """Metadata that once escaped as UnicodeDecodeError, RecursionError or TypeError."""
        if meta_text is None:
            doc = json.loads(json.dumps(model_files.meta))
            doc["features"]["transform"] = ["log10_power_mean"]
            meta_text = json.dumps(doc).encode()
        path = tmp_path / "m.tflite"
        path.write_bytes(model_files.content)
        path.with_suffix(".json").write_bytes(meta_text)
        with pytest.raises(ModelError, match=message):
            Model.load(path)
