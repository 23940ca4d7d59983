"""The one TFLite runner: raw feature vectors in, P(anomalous) out (evaluate, replay and live).

A Model owns one interpreter and is not thread-safe: score from one thread, or load one per thread.
The runtime is LiteRT (ai_edge_litert), else tflite_runtime, else tensorflow.lite as a last resort.

Whatever the runtime raises about a file (RuntimeError, ValueError, UnicodeDecodeError on a tensor
name, IndexError on a missing tensor) becomes a ModelError naming it. What it cannot raise, a
native crash, is why `Model.load(..., trial=True)` first loads and scores the bytes in a child
process (`daemon.analyse.model_trial`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import structlog

from daemon.analyse import model_meta, model_trial
from daemon.analyse.featurespec import FeatureSpec
from daemon.analyse.model_meta import ModelMetadata
from daemon.errors import ModelError, one_line

log = structlog.get_logger(__name__)

RUNTIMES: Final = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
"""Interpreter modules in order of preference; tensorflow only when neither runtime is installed."""

MAX_BATCH_ROWS: Final = 1024
"""Rows per invoke. One resized invoke beats a loop of single invokes by 4-6x at 256 rows
(measured: 1.1 ms vs 3.9-7.0 ms, float16 and int8); the cap bounds the interpreter's buffers."""

_RUNTIME_ERRORS: Final = (RuntimeError, ValueError, IndexError)
"""What the interpreter's Python binding raises about a bad model (UnicodeDecodeError is a
ValueError): a malformed file, never a bug of ours to show as a traceback."""
_FLOAT_DTYPES: Final = (np.float32,)
_QUANTIZED_DTYPES: Final = (np.int8, np.uint8)
_SINGLE_OUTPUT: Final = 1
_SOFTMAX_CLASSES: Final = 2


@dataclass(frozen=True)
class Runtime:
    """An importable TFLite interpreter: its module name, class, and OpResolverType (if any)."""

    module: str
    interpreter: Callable[..., Any]
    op_resolver_type: Any | None


def pick_runtime() -> Runtime:
    """Import the first available runtime of RUNTIMES; ModelError if none is installed."""
    reasons = []
    for name in RUNTIMES:
        try:
            # tensorflow is imported here only, lazily, and only when the edge runtimes are absent.
            module = importlib.import_module(name)
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        resolver = getattr(module, "OpResolverType", None)
        if resolver is None and name == "tensorflow.lite":
            resolver = getattr(getattr(module, "experimental", None), "OpResolverType", None)
        return Runtime(module=name, interpreter=module.Interpreter, op_resolver_type=resolver)
    raise ModelError(
        "no TFLite runtime installed (pip install ai-edge-litert): " + "; ".join(reasons)
    )


@contextlib.contextmanager
def native_stderr_logged(source: str) -> Iterator[None]:
    """While the block runs, what C/C++ code writes to fd 2 (LiteRT's "INFO: Created TensorFlow
    Lite XNNPACK delegate for CPU.") is caught and logged as `runtime_said` events, so a
    JSON-lines log (journald) stays JSON. Python's own writes in the block are caught too:
    keep the block to the native calls."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield  # no usable fd 2 (embedded use): nothing to catch
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.info("runtime_said", model=source, text=line.strip()[:500])


def open_interpreter(runtime: Runtime, content: bytes, *, source: str) -> Any:
    """Build and allocate an interpreter; if the default delegate (XNNPACK) refuses the model,
    retry with the builtin kernels only. A corrupt flatbuffer is a ModelError naming `source`."""
    with native_stderr_logged(source):
        interpreter, refused = _open_interpreter(runtime, content, source=source)
    if refused is not None:
        log.warning(
            "model_default_delegate_refused", model=source, error=refused, fallback="builtin"
        )
    return interpreter


def _open_interpreter(runtime: Runtime, content: bytes, *, source: str) -> tuple[Any, str | None]:
    """(interpreter, the default delegate's refusal or None); logs nothing (fd 2 is caught)."""
    try:
        interpreter = runtime.interpreter(model_content=content)
        interpreter.allocate_tensors()
    except _RUNTIME_ERRORS as exc:
        if runtime.op_resolver_type is None:
            raise ModelError(f"model {source} cannot be loaded: {_first_line(exc)}") from None
        first_error = _first_line(exc)
    else:
        return interpreter, None
    try:
        interpreter = runtime.interpreter(
            model_content=content,
            experimental_op_resolver_type=runtime.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
    except _RUNTIME_ERRORS:
        # Both refused: the file itself is the problem, and the first error says more.
        raise ModelError(f"model {source} cannot be loaded: {first_error}") from None
    return interpreter, first_error


class Model:
    """A loaded, validated TFLite model. Use Model.load(path)."""

    def __init__(self, path: Path, meta: ModelMetadata, interpreter: Any, runtime: Runtime) -> None:
        self.path = path
        self.meta = meta
        self.runtime = runtime.module
        self._interpreter = interpreter
        self._input = interpreter.get_input_details()[0]
        self._output = interpreter.get_output_details()[0]
        self._batch_rows = int(self._input["shape"][0])

    # --- the stable API -------------------------------------------------------------------
    @property
    def name(self) -> str:
        """Model name from its metadata."""
        return self.meta.name

    @property
    def sha256(self) -> str:
        """sha256 hex digest of the .tflite file (checked against the metadata at load)."""
        return self.meta.sha256

    @property
    def kind(self) -> str:
        """classifier or one-class (`daemon.analyse.model_meta.KINDS`): what the score means."""
        return self.meta.kind

    @property
    def threshold(self) -> float:
        """P(anomalous) at or above which a window is anomalous."""
        return self.meta.threshold

    @property
    def spec(self) -> FeatureSpec:
        """What the model consumes: STFT settings, transform, window length, physics block."""
        return self.meta.spec

    @property
    def metadata(self) -> dict[str, Any]:
        """The full metadata document as read from NAME.json."""
        return self.meta.raw

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        check_spec: Callable[[FeatureSpec], object] | None = None,
        trial: bool = False,
    ) -> Model:
        """Load NAME.tflite and the NAME.json beside it, validating both.

        Raises ModelError naming the file and field for every problem. ``check_spec`` is
        called with the metadata's FeatureSpec before the interpreter is created (the daemon
        passes `daemon.analyse.featurespec.resolve` against its config, which raises ConfigError).
        ``trial``: before this process creates an interpreter, a child process loads and scores
        the same bytes (`daemon.analyse.model_trial.check`), so a model that crashes the runtime
        natively is one ModelError here instead of a dead process. Every command that trusts a
        model from elsewhere sets it (daemon, replay, check-config, baseline, evaluate).
        """
        tflite_path = Path(path)
        meta, content = cls._checked(tflite_path, check_spec=check_spec, trial=trial)
        return cls.from_content(tflite_path, meta, content)

    @classmethod
    def check(cls, path: str | Path, *, check_spec: Callable[[FeatureSpec], object]) -> None:
        """Everything `load(..., trial=True)` checks, without an interpreter in this process.

        A reload validates on a thread beside the worker loop; an interpreter made there would
        redirect fd 2 (`native_stderr_logged`) while the worker logs, catching its lines. The
        trial's verdict is cached, so the worker's `load` of the same file right after is cheap.
        """
        cls._checked(Path(path), check_spec=check_spec, trial=True)

    @classmethod
    def _checked(
        cls,
        tflite_path: Path,
        *,
        check_spec: Callable[[FeatureSpec], object] | None,
        trial: bool,
    ) -> tuple[ModelMetadata, bytes]:
        """The metadata and bytes of a model that passed every check `load` makes."""
        json_path = tflite_path.with_suffix(".json")
        try:
            content = tflite_path.read_bytes()
        except FileNotFoundError:
            raise ModelError(f"model file {tflite_path} is missing") from None
        except OSError as exc:
            raise ModelError(f"model file {tflite_path} cannot be read: {exc.strerror}") from None
        if not content:
            raise ModelError(f"model file {tflite_path} is empty")
        meta = model_meta.validate(model_meta.read(json_path), source=json_path.name)
        if check_spec is not None:
            check_spec(meta.spec)
        digest = hashlib.sha256(content).hexdigest()
        if digest != meta.sha256:
            raise ModelError(
                f"model {tflite_path.name}: sha256 is {digest}, {json_path.name} says {meta.sha256}"
                " (file corrupt or replaced without its metadata)"
            )
        if trial:
            model_trial.check(tflite_path, content, meta)
        return meta, content

    @classmethod
    def from_content(cls, path: Path, meta: ModelMetadata, content: bytes) -> Model:
        """The runner for .tflite bytes already checked against their metadata (the second half
        of `load`, and all of what the trial child does before it scores)."""
        runtime = pick_runtime()
        interpreter = open_interpreter(runtime, content, source=path.name)
        try:
            model = cls(path, meta, interpreter, runtime)
            model._check_signature()
        except _RUNTIME_ERRORS as exc:
            raise ModelError(f"model {path.name} cannot be loaded: {_first_line(exc)}") from None
        log.info(
            "model_loaded",
            model=meta.name,
            sha256=meta.sha256[:12],
            runtime=runtime.module,
            quantization=meta.quantization,
            input_dtype=np.dtype(model._input["dtype"]).name,
        )
        return model

    def score(self, features: npt.ArrayLike) -> float | np.ndarray:
        """The design's API: (width,) -> float (`score_one`), (N, width) -> float32 (N,)
        (`score_batch`). Code of this project calls the one it means."""
        x = np.asarray(features, dtype=np.float32)
        return self.score_one(x) if x.ndim == 1 else self.score_batch(x)

    def score_one(self, vector: npt.ArrayLike) -> float:
        """The score of one raw feature vector (width,): P(anomalous) for a classifier, the
        mapped distance for a one-class model (`kind`).

        A raw vector is `FeatureSpec.vector` of a window: 513 row means, then the physics
        values when the model has a physics block. The model's own transform is applied here.
        """
        x = np.asarray(vector, dtype=np.float32)
        if x.ndim != 1:
            raise ModelError(f"model {self.path.name}: score_one takes one vector, got {x.shape}")
        return float(self.score_batch(x.reshape(1, -1))[0])

    def score_batch(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Scores of raw feature vectors (N, width), float32 (N,); N = 0 gives an empty array."""
        out = self.outputs(vectors)
        scores: npt.NDArray[np.float32] = np.clip(
            out[:, self.meta.anomalous_index], 0.0, 1.0
        ).astype(np.float32)
        return scores

    def outputs(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The model's dequantized output rows (N, columns) for raw feature vectors (N, width),
        before the score column is picked and clipped to [0, 1]: what the trial checks are
        probabilities (a clipped score would hide an output of 7 or -3)."""
        batch = np.asarray(vectors, dtype=np.float32)
        width = self.spec.width
        if batch.ndim != 2 or batch.shape[-1] != width:
            raise ModelError(
                f"model {self.path.name}: features have shape {batch.shape}, expected"
                f" ({width},) or (N, {width})"
            )
        if batch.shape[0] == 0:
            return np.zeros((0, int(self._output["shape"][-1])), dtype=np.float32)
        transformed = self.spec.model_input(batch)
        rows: npt.NDArray[np.float32] = np.concatenate(
            [
                self._run(transformed[start : start + MAX_BATCH_ROWS])
                for start in range(0, transformed.shape[0], MAX_BATCH_ROWS)
            ]
        )
        return rows

    # --- internals --------------------------------------------------------------------------
    def _check_signature(self) -> None:
        """Input (.., spec width) of a dtype we can feed; output width matching `output`."""
        name = self.path.name
        details = self._interpreter.get_input_details()
        if len(details) != 1:
            raise ModelError(f"model {name}: has {len(details)} inputs, expected 1")
        shape = tuple(int(d) for d in self._input["shape"])
        width = self.spec.width
        if len(shape) != 2 or shape[-1] != width:
            raise ModelError(
                f"model {name}: input shape is {shape}, its metadata features need (N, {width})"
            )
        for role, tensor in (("input", self._input), ("output", self._output)):
            if tensor["dtype"] not in _FLOAT_DTYPES + _QUANTIZED_DTYPES:
                dtype = np.dtype(tensor["dtype"]).name
                raise ModelError(
                    f"model {name}: {role} dtype {dtype} is not float32, int8 or uint8"
                )
            if tensor["dtype"] in _QUANTIZED_DTYPES and not tensor["quantization"][0] > 0:
                raise ModelError(
                    f"model {name}: {role} is integer but carries no quantization scale"
                )
        columns = int(self._output["shape"][-1])
        want = _SOFTMAX_CLASSES if self.meta.output == "softmax" else _SINGLE_OUTPUT
        if columns != want:
            raise ModelError(
                f"model {name}: output has {columns} column(s), metadata output"
                f" {self.meta.output!r} needs {want}"
            )

    def _run(self, batch: np.ndarray) -> npt.NDArray[np.float32]:
        """Feed a (N, width) transformed batch in one invoke (resizing the input when N changes);
        the dequantized output rows. A runtime error is the model's fault: a ModelError."""
        rows = batch.shape[0]
        try:
            if rows != self._batch_rows:
                # One resize per new batch size: the daemon always feeds 1, evaluate a few sizes.
                self._interpreter.resize_tensor_input(self._input["index"], [rows, self.spec.width])
                self._interpreter.allocate_tensors()
                self._batch_rows = rows
            self._interpreter.set_tensor(self._input["index"], _quantize(batch, self._input))
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._output["index"])
            out: npt.NDArray[np.float32] = _dequantize(raw, self._output).reshape(rows, -1)
        except _RUNTIME_ERRORS as exc:
            raise ModelError(f"model {self.path.name} cannot score: {_first_line(exc)}") from None
        return out


def _quantize(x: np.ndarray, tensor: Mapping[str, Any]) -> np.ndarray:
    """float32 -> the tensor's dtype with its own (scale, zero_point); float32 passes through."""
    dtype = np.dtype(tensor["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero_point = tensor["quantization"]
    info = np.iinfo(dtype)
    q = np.round(x / np.float32(scale)) + zero_point
    quantized: np.ndarray = np.clip(q, info.min, info.max).astype(dtype)
    return quantized


def _dequantize(q: np.ndarray, tensor: Mapping[str, Any]) -> np.ndarray:
    """The tensor's dtype -> float32 using its own (scale, zero_point)."""
    x: np.ndarray = q.astype(np.float32)
    if np.dtype(tensor["dtype"]) == np.float32:
        return x
    scale, zero_point = tensor["quantization"]
    return (x - np.float32(zero_point)) * np.float32(scale)


def _first_line(exc: BaseException) -> str:
    """The runtime's message as one printable line (it may quote the file's own bytes)."""
    return one_line(str(exc)) or type(exc).__name__
