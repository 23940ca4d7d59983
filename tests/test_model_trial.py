"""daemon.analyse.model_trial: a model from elsewhere is loaded and scored in a child process
before any command trusts it (issue 11).

Mutants are made deterministically from models exported in the session: bytes flipped, words
overwritten and spans zeroed at seeded positions in each region of the flatbuffer (its header
and root table, the operator codes, the operators, the tensors, the largest weight buffer), a
root table's field dropped, and truncations. Each mutant's NAME.json carries its new sha256,
so the hash check passes, as it does for a model whoever supplies it signs. Then
`corona-monitor --replay` and `check-config` run on each as real processes. No process may die
by a signal, replay exits 0 or 1 with exactly one line naming the file, check-config refuses
exactly what replay refuses, and no traceback or raw control character reaches the terminal.

Before the trial existed (commit e6e35bd) this set failed: both models without subgraphs killed
replay and check-config with SIGSEGV, and a zeroed operator ended replay in a traceback
(`RuntimeError: Input tensor 3 lacks data`) after check-config had passed it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest
import structlog

from daemon.analyse import model_meta, model_trial
from daemon.analyse.model import Model
from daemon.constants import N_BINS
from daemon.errors import ModelError, one_line
from tests.daemon_runs import json_lines, noisy_clip, run_monitor, write_config, write_wav
from tests.fixtures.microphone import ALSA_DEVICE, MicEnv, alsa_file_mic
from tests.fixtures.model_runs import model_metadata, write_model

SEED: Final = 11
REGIONS: Final = ("header", "opcodes", "operators", "tensors", "buffers")
ROOT_FIELDS: Final = {"opcodes": 1, "subgraphs": 2, "buffers": 4}
"""Fields of the flatbuffer's root table (Model) that a mutant may lose: its vtable entry zeroed,
the table is absent. Without subgraphs LiteRT 2.3 crashes (SIGSEGV) on every model tried."""


@dataclass(frozen=True)
class Source:
    """An exported model and what is done to it: each kind at a seeded position of each region,
    each root field dropped, truncation to each fraction of its length."""

    run: str
    quantize: str
    kinds: tuple[str, ...]
    dropped: tuple[str, ...]
    truncate_at: tuple[float, ...]


SOURCES: Final = (
    # The int8 model is the one whose seeded flips crash natively (as in the probe) ...
    Source("sigmoid", "int8", ("flip", "word", "zero"), tuple(ROOT_FIELDS), (0.5,)),
    # ... the float one raises the odd Python errors (UnicodeDecodeError, tensor lacks data).
    Source("softmax", "none", ("flip", "zero"), ("subgraphs",), (0.97,)),
)
CLIP_S: Final = 2.0
WORKERS: Final = 2
"""Processes run side by side: the machine has 2 cores; each run is mostly start-up."""
PROCESS_TIMEOUT_S: Final = 60.0
PYTHON_ERRORS: Final = re.compile(
    r"\b(Traceback|RuntimeError|ValueError|UnicodeDecodeError|IndexError|TypeError|KeyError)\b"
)
"""An exception's class name in a refusal means Model let a runtime error through untranslated."""


# -- flatbuffer regions -------------------------------------------------------------------------


def _u32(data: bytes, at: int) -> int:
    value: int = struct.unpack_from("<I", data, at)[0]
    return value


def _field(data: bytes, table: int, index: int) -> int | None:
    """Position of field `index` of the flatbuffer table at `table`, None when absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    vtable_size = struct.unpack_from("<H", data, vtable)[0]
    if 4 + 2 * index >= vtable_size:
        return None
    offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _vector(data: bytes, table: int, index: int) -> tuple[int, int]:
    """(first element's position, length) of a vector field; (0, 0) when absent."""
    at = _field(data, table, index)
    if at is None:
        return 0, 0
    start = at + _u32(data, at)
    return start + 4, _u32(data, start)


def _tables(data: bytes, table: int, index: int) -> list[int]:
    start, length = _vector(data, table, index)
    return [start + 4 * k + _u32(data, start + 4 * k) for k in range(length)]


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte spans of the parts of a .tflite (schema: Model.operator_codes = field 1, subgraphs 2,
    buffers 4; SubGraph.tensors 0, operators 3; Buffer.data 0)."""
    root = _u32(data, 0)
    opcodes = _tables(data, root, 1)
    subgraph = _tables(data, root, 2)[0]
    tensors = _tables(data, subgraph, 0)
    operators = _tables(data, subgraph, 3)
    buffers = []
    for buffer in _tables(data, root, 4):
        start, length = _vector(data, buffer, 0)
        if length:
            buffers.append((start, start + length))
    return {
        "header": (0, root + 16),
        "opcodes": (min(opcodes) - 8, max(opcodes) + 16),
        "operators": (min(operators) - 8, max(operators) + 24),
        "tensors": (min(tensors) - 8, max(tensors) + 24),
        "buffers": max(buffers, key=lambda span: span[1] - span[0]),
    }


def input_name_span(data: bytes) -> tuple[int, int]:
    """Byte span of the input tensor's name (SubGraph.inputs = field 1, Tensor.name = field 3)."""
    subgraph = _tables(data, _u32(data, 0), 2)[0]
    inputs, _ = _vector(data, subgraph, 1)
    tensor = _tables(data, subgraph, 0)[struct.unpack_from("<i", data, inputs)[0]]
    at = _field(data, tensor, 3)
    assert at is not None
    start = at + _u32(data, at)
    return start + 4, start + 4 + _u32(data, start)


# -- mutants --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    name: str
    """File stem: source model, region, kind and position, e.g. sigmoid-int8-operators-flip-5960."""
    data: bytes


def mutate(data: bytes, span: tuple[int, int], kind: str, rng: random.Random) -> tuple[int, bytes]:
    """(position, mutated bytes): `kind` applied at a seeded position inside `span`."""
    low, high = span[0], min(span[1], len(data))
    out = bytearray(data)
    at = rng.randrange(low, high)
    if kind == "flip":  # 1-4 bytes of the region XORed with a non-zero value
        out[at] ^= rng.randint(1, 255)
        for _ in range(rng.randint(0, 3)):
            out[rng.randrange(low, high)] ^= rng.randint(1, 255)
    elif kind == "word":  # an aligned 32-bit offset, index or size overwritten
        at -= at % 4
        word = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32), rng.randrange(64)])
        out[at : at + 4] = struct.pack("<I", word)
    else:  # zero: 4-64 bytes zero-filled
        length = rng.randint(4, 64)
        out[at : at + length] = bytes(len(out[at : at + length]))
    return at, bytes(out)


def without_field(data: bytes, index: int) -> bytes:
    """The file with field `index` of its root table gone (its vtable entry zeroed)."""
    root = _u32(data, 0)
    entry = root - struct.unpack_from("<i", data, root)[0] + 4 + 2 * index
    return data[:entry] + b"\0\0" + data[entry + 2 :]


def mutants_of(source: Source, data: bytes, rng: random.Random) -> list[Mutant]:
    """`source`'s mutants of its exported bytes."""
    label = f"{source.run}-{source.quantize}"
    spans = regions(data)
    made = []
    for region in REGIONS:
        for kind in source.kinds:
            at, mutated = mutate(data, spans[region], kind, rng)
            made.append(Mutant(f"{label}-{region}-{kind}-{at}", mutated))
    for field in source.dropped:
        made.append(Mutant(f"{label}-no-{field}", without_field(data, ROOT_FIELDS[field])))
    for fraction in source.truncate_at:
        keep = round(len(data) * fraction)
        made.append(Mutant(f"{label}-truncated-{keep}", data[:keep]))
    return made


def write_signed(folder: Path, name: str, data: bytes, source_meta: dict[str, Any]) -> Path:
    """NAME.tflite + NAME.json whose sha256 matches the (mutated) bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {**source_meta, "name": name, "sha256": hashlib.sha256(data).hexdigest()}
    return write_model(folder / f"{name}.tflite", data, meta)


# -- running them ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    model: Path
    replay: subprocess.CompletedProcess[str]
    check: subprocess.CompletedProcess[str]

    @property
    def refused(self) -> bool:
        return self.replay.returncode == 1


@pytest.fixture(scope="module")
def mic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MicEnv]:
    """An ALSA file microphone, so check-config's only possible problem is the model."""
    with alsa_file_mic(tmp_path_factory.mktemp("trial-mic"), noisy_clip(1.0, seed=5)) as made:
        yield made


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, exported: Callable[[str, str], Any], mic: MicEnv
) -> list[Outcome]:
    """Every mutant replayed and checked by real corona-monitor processes."""
    root = tmp_path_factory.mktemp("mutants")
    clip = write_wav(root / "clip.wav", noisy_clip(CLIP_S, seed=11))
    rng = random.Random(SEED)  # noqa: S311 - seeded mutation positions, not a secret
    models = []
    for source in SOURCES:
        exported_path = Path(exported(source.run, source.quantize).tflite_path)
        meta = json.loads(exported_path.with_suffix(".json").read_text(encoding="utf-8"))
        for mutant in mutants_of(source, exported_path.read_bytes(), rng):
            models.append(write_signed(root / mutant.name, mutant.name, mutant.data, meta))

    def run_both(model: Path) -> Outcome:
        cfg = write_config(
            model.parent, model, logging={"level": "error"}, audio={"device": ALSA_DEVICE}
        )
        replay = run_monitor(
            ["--config", str(cfg), "--replay", str(clip)], timeout_s=PROCESS_TIMEOUT_S
        )
        check = run_monitor(
            ["check-config", "--config", str(cfg)], env=mic.env, timeout_s=PROCESS_TIMEOUT_S
        )
        return Outcome(model, replay, check)

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(run_both, models))


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


class TestMutants:
    def test_no_process_dies_by_a_signal(self, outcomes: list[Outcome]) -> None:
        """Neither replay nor check-config is ever killed by what the runtime does to a file."""
        killed = [
            f"{o.model.name}: replay {o.replay.returncode}, check-config {o.check.returncode}"
            for o in outcomes
            if o.replay.returncode < 0 or o.check.returncode < 0
        ]
        assert not killed, killed

    def test_replay_scores_or_refuses_in_one_line(self, outcomes: list[Outcome]) -> None:
        """Exit 0 with a probability per window, or exit 1 with one line naming the file."""
        for o in outcomes:
            name, done = o.model.name, o.replay
            assert "Traceback" not in done.stdout + done.stderr, (name, done.stderr)
            assert done.returncode in (0, 1), (name, done.returncode, done.stderr)
            if done.returncode == 0:
                scores = [v["score"] for v in json_lines(done.stdout)]
                assert len(scores) == round(CLIP_S), (name, done.stdout)
                assert all(0.0 <= s <= 1.0 for s in scores), (name, scores)
                continue
            lines = _lines(done.stderr)
            assert len(lines) == 1, (name, done.stderr)
            assert lines[0].startswith(f"corona-monitor: model {name}"), (name, lines)
            assert lines[0].isprintable(), (name, lines)
            assert not PYTHON_ERRORS.search(lines[0]), (name, lines)

    def test_check_config_refuses_what_replay_refuses(self, outcomes: list[Outcome]) -> None:
        """A mutant that would fail replay is check-config's problem too, and only then."""
        for o in outcomes:
            name, done = o.model.name, o.check
            assert "Traceback" not in done.stdout + done.stderr, (name, done.stderr)
            assert done.returncode == o.replay.returncode, (name, done.stderr, o.replay.stderr)
            problems = _lines(done.stderr)
            if o.refused:
                assert len(problems) == 1, (name, done.stderr)
                assert problems[0].startswith(f"problem: model: model {name}"), (name, problems)
                assert problems[0].isprintable(), (name, problems)
            else:
                assert problems == [], (name, problems)

    def test_the_set_holds_every_kind_of_outcome(self, outcomes: list[Outcome]) -> None:
        """The seeded set is worth running: some mutants still work, some are refused by the
        runtime's own checks, and some crash it natively, which only the trial can catch (a
        runtime that stops crashing on these would need a new SEED to keep this honest)."""
        refusals = [_lines(o.replay.stderr)[0] for o in outcomes if o.refused]
        kinds = Counter(re.sub(r"^corona-monitor: model \S+ ", "", r)[:40] for r in refusals)
        print(f"\n{len(outcomes)} mutants, {len(outcomes) - len(refusals)} still work; refused:")
        for kind, n in kinds.most_common():
            print(f"  {n:3d} {kind}")
        assert len(outcomes) >= 30
        assert any(not o.refused for o in outcomes)
        assert any("crashed the TFLite runtime (SIG" in line for line in refusals), refusals
        assert any("cannot be loaded" in line for line in refusals), refusals


class TestTrustingCommands:
    @staticmethod
    def _crasher(outcomes: list[Outcome]) -> Path:
        """A mutant that crashes the runtime natively (the set holds some: TestMutants)."""
        return next(o.model for o in outcomes if "crashed the TFLite" in o.replay.stderr)

    def test_live_daemon_refuses_a_crashing_model(
        self, outcomes: list[Outcome], mic: MicEnv
    ) -> None:
        """`corona-monitor` (live) stops at start-up with the trial's line, before any capture."""
        model = self._crasher(outcomes)
        cfg = write_config(
            model.parent, model, logging={"level": "error"}, audio={"device": ALSA_DEVICE}
        )
        done = run_monitor(["--config", str(cfg)], env=mic.env, timeout_s=PROCESS_TIMEOUT_S)
        assert done.returncode == 1, done.stderr
        lines = _lines(done.stderr)
        assert len(lines) == 1, done.stderr
        assert re.fullmatch(
            rf"corona-monitor: model {re.escape(model.name)} crashed the TFLite runtime"
            r" \(SIG[A-Z]+\) in a trial load",
            lines[0],
        ), lines

    def test_evaluate_refuses_a_crashing_model(
        self, outcomes: list[Outcome], tmp_path: Path
    ) -> None:
        """`corona-train evaluate` trusts a model only after the same trial."""
        model = self._crasher(outcomes)
        for label in ("normal", "anomalous"):
            (tmp_path / label).mkdir()
            write_wav(tmp_path / label / "a.wav", noisy_clip(1.0, seed=3))
        done = subprocess.run(
            [sys.executable, "-m", "train.cli", "evaluate", str(model), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        lines = _lines(done.stderr)
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"corona-train: error: model {model.name} crashed"), lines


# -- the trial itself, in this process ------------------------------------------------------------


def _signed(tmp_path: Path, exported: Callable[[str, str], Any], name: str) -> Path:
    source = Path(exported("sigmoid", "int8").tflite_path)
    meta = json.loads(source.with_suffix(".json").read_text(encoding="utf-8"))
    return write_signed(tmp_path, name, source.read_bytes(), meta)


def _load(path: Path) -> tuple[bytes, model_meta.ModelMetadata]:
    meta = model_meta.validate(model_meta.read(path.with_suffix(".json")), source=path.name)
    return path.read_bytes(), meta


def _trials(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [event for event in logs if event["event"] == "model_trial"]


class TestTrial:
    def test_a_good_model_passes_once_per_file_version(
        self, tmp_path: Path, exported: Callable[[str, str], Any]
    ) -> None:
        """Passed, timed and cached: the same file again is not tried again; a new version is."""
        path = _signed(tmp_path, exported, "good")
        content, meta = _load(path)
        with structlog.testing.capture_logs() as logs:
            model_trial.check(path, content, meta)
            model_trial.check(path, content, meta)
            first = _trials(logs)
            path.write_bytes(content)  # a new mtime: another version of the file, tried again
            model_trial.check(path, content, meta)
        assert len(first) == 1, first
        assert first[0]["passed"] is True
        assert 0.0 < first[0]["seconds"] < model_trial.TRIAL_TIMEOUT_S
        assert len(_trials(logs)) == 2, logs

    def test_model_load_with_trial_scores_like_without(
        self, tmp_path: Path, exported: Callable[[str, str], Any]
    ) -> None:
        """The trial only vets the file: the model loaded after it is the ordinary runner."""
        path = _signed(tmp_path, exported, "plain")
        vector = np.linspace(0.0, 1e-3, N_BINS, dtype=np.float32)
        trusted = Model.load(path, trial=True).score_one(vector)
        assert trusted == Model.load(path).score_one(vector)

    def test_a_hung_trial_is_refused_after_its_timeout(
        self, tmp_path: Path, exported: Callable[[str, str], Any]
    ) -> None:
        """A child that does not answer in time is killed and the model refused, naming it."""
        path = _signed(tmp_path, exported, "slow")
        content, meta = _load(path)
        with pytest.raises(ModelError, match=r"^model slow\.tflite: its trial load did not finish"):
            model_trial.check(path, content, meta, timeout_s=0.01)

    def test_outputs_that_are_no_probabilities_are_refused(
        self, tmp_path: Path, exported: Callable[[str, str], Any]
    ) -> None:
        """NaN weights load and run, but what they score is no probability: refused. Without
        the trial the runner would hand NaN to the verdict (clipping keeps NaN)."""
        source = Path(exported("softmax", "none").tflite_path)
        data = bytearray(source.read_bytes())
        start, end = regions(bytes(data))["buffers"]
        data[start:end] = struct.pack("<f", float("nan")) * ((end - start) // 4)
        meta = json.loads(source.with_suffix(".json").read_text(encoding="utf-8"))
        path = write_signed(tmp_path, "nan-weights", bytes(data), meta)
        assert np.isnan(Model.load(path).outputs(np.zeros((1, N_BINS), np.float32))).all()
        with pytest.raises(ModelError, match=r"^model nan-weights\.tflite: scores a neutral"):
            Model.load(path, trial=True)

    def test_output_out_of_range_is_refused(self, tmp_path: Path) -> None:
        """A model whose one output is 3 where its metadata promises a sigmoid: refused (the
        runner's clipping would have made it a confident 1.0)."""
        import keras  # TensorFlow loads only when a test needs a model

        from train.export import convert

        linear = keras.Sequential([keras.Input((N_BINS,)), keras.layers.Dense(1)])
        linear.layers[0].set_weights([np.zeros((N_BINS, 1), np.float32), np.array([3.0])])
        content = convert(linear, "none", np.zeros((0, N_BINS), np.float32))
        meta = model_metadata(
            content, name="linear", output="sigmoid", transform="power_mean", quantization="none"
        )
        path = write_model(tmp_path / "linear.tflite", content, meta)
        assert Model.load(path).score_one(np.zeros(N_BINS, np.float32)) == 1.0
        with pytest.raises(ModelError, match=r"^model linear\.tflite: scores a neutral .*3\."):
            Model.load(path, trial=True)

    def test_a_tensor_name_that_is_no_utf8_is_a_model_error(
        self, tmp_path: Path, exported: Callable[[str, str], Any]
    ) -> None:
        """The binding decodes tensor names as UTF-8: invalid bytes there are a ModelError
        naming the file, in this process as in the trial (not a UnicodeDecodeError)."""
        source = Path(exported("softmax", "none").tflite_path)
        data = bytearray(source.read_bytes())
        start, end = input_name_span(bytes(data))
        data[start:end] = b"\xff" * (end - start)
        meta = json.loads(source.with_suffix(".json").read_text(encoding="utf-8"))
        path = write_signed(tmp_path, "bad-name", bytes(data), meta)
        expected = r"^model bad-name\.tflite cannot be loaded: 'utf-8' codec can't decode"
        with pytest.raises(ModelError, match=expected):
            Model.load(path)
        with pytest.raises(ModelError, match=expected):
            Model.load(path, trial=True)


def test_one_line_escapes_what_a_file_may_carry() -> None:
    """A runtime's message quoting the file: control characters and escape sequences shown
    escaped, one line, bounded."""
    assert one_line("tensor \x1b[2Jname\x07\nsecond line") == "tensor \\x1b[2Jname\\x07"
    assert one_line("x" * 1000).endswith("...")
    assert len(one_line("x" * 1000)) == 300
