"""daemon.analyse.model and daemon.analyse.model_meta: the one TFLite runner, on real exported
models."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from daemon.analyse.model import MAX_BATCH_ROWS, Model, Runtime, open_interpreter, pick_runtime
from daemon.config import FeatureSettings, Settings, WindowSettings
from daemon.constants import N_BINS
from daemon.errors import ConfigError, ModelError
from daemon.pipeline import runtime_spec
from tests.fixtures.model_runs import CLASSES, synthetic_row_means

REPO = Path(__file__).resolve().parent.parent


def _copy_model(src: Path, dst_dir: Path, name: str = "m") -> Path:
    """Copy NAME.tflite + NAME.json into dst_dir (as `name`) so a test may damage the copy."""
    dst = dst_dir / f"{name}.tflite"
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    json_path = path.with_suffix(".json")
    doc = json.loads(json_path.read_text())
    edit(doc)
    json_path.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    """Raw row means of 40 windows of both classes, as daemon.analyse.features returns them."""
    rng = np.random.default_rng(11)
    return synthetic_row_means(rng, np.arange(40) % 2)


class TestPickRuntime:
    def test_prefers_ai_edge_litert(self) -> None:
        """With LiteRT installed the runner uses it, not tflite_runtime or tensorflow."""
        assert pick_runtime().module == "ai_edge_litert.interpreter"

    def test_daemon_never_imports_tensorflow(self, exported: Callable[..., Any]) -> None:
        """Loading and scoring an int8 model in a fresh process leaves tensorflow unimported."""
        model_path = exported("sigmoid", "int8").tflite_path
        code = textwrap.dedent(
            f"""
            import sys
            import numpy as np
            from daemon.analyse.model import Model
            m = Model.load({str(model_path)!r})
            m.score(np.ones((3, {N_BINS}), np.float32))
            heavy = sorted(n for n in sys.modules if n.split(".")[0] in ("tensorflow", "librosa"))
            print(heavy)
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stdout.strip().splitlines()[-1] == "[]"


class TestScore:
    @pytest.mark.parametrize("run", ["softmax", "sigmoid"])
    @pytest.mark.parametrize("quantize", ["none", "float16", "int8"])
    def test_single_equals_batch(
        self, exported: Callable[..., Any], windows: np.ndarray, run: str, quantize: str
    ) -> None:
        """Scoring windows one by one gives exactly the scores of one batch call."""
        model = Model.load(exported(run, quantize).tflite_path)
        batch = model.score(windows)
        singles = [model.score(row) for row in windows]
        assert isinstance(batch, np.ndarray)
        assert batch.shape == (len(windows),)
        assert all(isinstance(s, float) for s in singles)
        np.testing.assert_array_equal(np.asarray(singles, np.float32), batch)
        assert np.all((batch >= 0.0) & (batch <= 1.0))

    def test_batch_larger_than_one_invoke(self, exported: Callable[..., Any]) -> None:
        """A batch above MAX_BATCH_ROWS is scored in chunks with the same results."""
        model = Model.load(exported("sigmoid", "int8").tflite_path)
        rng = np.random.default_rng(12)
        many = synthetic_row_means(rng, np.arange(MAX_BATCH_ROWS + 7) % 2)
        whole = model.score(many)
        tail = model.score(many[-7:])
        assert isinstance(whole, np.ndarray)
        assert whole.shape == (MAX_BATCH_ROWS + 7,)
        np.testing.assert_array_equal(whole[-7:], tail)

    def test_scores_separate_the_classes(
        self, exported: Callable[..., Any], windows: np.ndarray
    ) -> None:
        """P(anomalous) is higher on average for anomalous windows (the softmax column is right)."""
        labels = np.arange(len(windows)) % 2
        for run in ("softmax", "sigmoid"):
            scores = np.asarray(Model.load(exported(run, "int8").tflite_path).score(windows))
            assert scores[labels == 1].mean() > scores[labels == 0].mean() + 0.3

    def test_softmax_column_follows_classes(
        self, exported: Callable[..., Any], windows: np.ndarray, tmp_path: Path
    ) -> None:
        """With classes listed the other way round, the score is the other softmax column."""
        model_path = _copy_model(exported("softmax", "none").tflite_path, tmp_path)
        straight = np.asarray(Model.load(model_path).score(windows))
        _edit_json(model_path, lambda d: d.update(classes=list(reversed(CLASSES))))
        flipped = np.asarray(Model.load(model_path).score(windows))
        np.testing.assert_allclose(flipped, 1.0 - straight, atol=1e-6)

    def test_empty_batch(self, exported: Callable[..., Any]) -> None:
        """Zero windows give zero scores, not an interpreter error."""
        model = Model.load(exported("softmax", "int8").tflite_path)
        assert np.asarray(model.score(np.zeros((0, N_BINS), np.float32))).shape == (0,)

    @pytest.mark.parametrize("shape", [(512,), (3, 512), (2, 3, N_BINS)])
    def test_wrong_feature_shape(
        self, exported: Callable[..., Any], shape: tuple[int, ...]
    ) -> None:
        """Features of the wrong shape are refused with the shape in the message."""
        model = Model.load(exported("softmax", "none").tflite_path)
        with pytest.raises(ModelError, match=r"features have shape"):
            model.score(np.ones(shape, np.float32))

    def test_public_attributes(self, exported: Callable[..., Any]) -> None:
        """name, sha256, threshold and metadata come from NAME.json."""
        report = exported("sigmoid", "int8")
        model = Model.load(report.tflite_path)
        assert model.name == report.name
        assert model.sha256 == report.sha256
        assert model.threshold == pytest.approx(report.threshold)
        assert model.metadata["quantization"] == "int8"


class TestMetadata:
    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            # The model decides n_fft; its input must then be n_fft // 2 + 1 wide.
            ("n_fft", 2048, r"input shape is \(1, 513\), its metadata features need \(N, 1025\)"),
            ("sample_rate", 48000, "features.sample_rate is 48000, the daemon computes 44100"),
            ("hop_length", 2048, "features.hop_length is 2048, expected 1-n_fft"),
            ("window", "hamming", "features.window is 'hamming', the daemon computes 'hann'"),
            ("center", False, "features.center is False, the daemon computes True"),
            ("center", 1, "features.center is 1, the daemon computes True"),
            ("transform", "mfcc", "features.transform 'mfcc' is unknown"),
        ],
    )
    def test_feature_mismatch_names_field(
        self,
        exported: Callable[..., Any],
        tmp_path: Path,
        field: str,
        value: object,
        message: str,
    ) -> None:
        """A feature setting that differs from the daemon's is refused, naming file and field."""
        path = _copy_model(exported("softmax", "int8").tflite_path, tmp_path, "corona-demo")
        _edit_json(path, lambda d: d["features"].update({field: value}))
        with pytest.raises(ModelError, match=r"^model corona-demo\.(json|tflite): " + message):
            Model.load(path)

    def test_config_contradicting_the_model_is_named(self, exported: Callable[..., Any]) -> None:
        """Config values that differ from the model's FeatureSpec stop start-up, naming both."""
        model = Model.load(exported("softmax", "int8").tflite_path)
        assert runtime_spec(Settings(), model) == model.spec
        with pytest.raises(ConfigError, match=r"^features\.n_fft is 2048 in the config.*1024"):
            runtime_spec(Settings(features=FeatureSettings(n_fft=2048)), model)
        with pytest.raises(ConfigError, match=r"^window\.length_s is 5\.0 in the config.*30\.0"):
            runtime_spec(Settings(window=WindowSettings(length_s=5.0)), model)
        with pytest.raises(ConfigError, match=r"^features\.center is False in the config"):
            runtime_spec(Settings(features=FeatureSettings(center=False)), model)

    @pytest.mark.parametrize(
        ("edit", "message"),
        [
            (lambda d: d.pop("classes"), r"required field\(s\) missing: classes"),
            (lambda d: d.pop("threshold"), r"required field\(s\) missing: threshold"),
            (lambda d: d["features"].pop("n_fft"), r"missing: features.n_fft"),
            (lambda d: d.update(format="corona-monitor-model/9"), "format is"),
            (lambda d: d.update(classes=["ok", "bad"]), "classes is"),
            (lambda d: d.update(output="tanh"), "output is 'tanh'"),
            (lambda d: d.update(threshold=1.5), "threshold is 1.5"),
            (lambda d: d.update(quantization="int4"), "quantization is 'int4'"),
            (lambda d: d.update(sha256="abc"), "sha256 is 'abc'"),
            (lambda d: d.update(window_s=0), "window_s is 0"),
        ],
    )
    def test_bad_field_is_named(
        self,
        exported: Callable[..., Any],
        tmp_path: Path,
        edit: Callable[[dict[str, Any]], None],
        message: str,
    ) -> None:
        """Missing or invalid metadata fields are refused with the field named."""
        path = _copy_model(exported("sigmoid", "int8").tflite_path, tmp_path)
        _edit_json(path, edit)
        with pytest.raises(ModelError, match=r"^model m.json: .*" + message):
            Model.load(path)

    def test_output_kind_must_match_tensor(
        self, exported: Callable[..., Any], tmp_path: Path
    ) -> None:
        """Metadata saying sigmoid on a 2-column softmax model is refused."""
        path = _copy_model(exported("softmax", "int8").tflite_path, tmp_path)
        _edit_json(path, lambda d: d.update(output="sigmoid"))
        with pytest.raises(
            ModelError, match=r"output has 2 column\(s\), metadata output 'sigmoid'"
        ):
            Model.load(path)


class TestFiles:
    def test_missing_json(self, exported: Callable[..., Any], tmp_path: Path) -> None:
        """A .tflite without NAME.json beside it is refused, naming the json path."""
        path = _copy_model(exported("softmax", "int8").tflite_path, tmp_path)
        path.with_suffix(".json").unlink()
        with pytest.raises(ModelError, match=r"m\.json is missing"):
            Model.load(path)

    def test_json_not_json(self, exported: Callable[..., Any], tmp_path: Path) -> None:
        """Unparsable metadata is refused, naming the file."""
        path = _copy_model(exported("softmax", "int8").tflite_path, tmp_path)
        path.with_suffix(".json").write_text("{not json")
        with pytest.raises(ModelError, match=r"m\.json is not valid JSON"):
            Model.load(path)

    def test_missing_tflite(self, tmp_path: Path) -> None:
        """A missing model file is refused, naming it."""
        with pytest.raises(ModelError, match=r"nothing\.tflite is missing"):
            Model.load(tmp_path / "nothing.tflite")

    def test_sha256_mismatch(self, exported: Callable[..., Any], tmp_path: Path) -> None:
        """A .tflite replaced without its metadata fails the sha256 check."""
        path = _copy_model(exported("softmax", "int8").tflite_path, tmp_path)
        shutil.copyfile(exported("softmax", "none").tflite_path, path)
        with pytest.raises(ModelError, match=r"m\.tflite: sha256 is [0-9a-f]{64}, m\.json says"):
            Model.load(path)

    @pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
    def test_corrupt_flatbuffer(
        self, exported: Callable[..., Any], tmp_path: Path, damage: str
    ) -> None:
        """Damaged bytes (sha256 updated, so the interpreter sees them) are a clear error."""
        path = _copy_model(exported("sigmoid", "int8").tflite_path, tmp_path)
        good = path.read_bytes()
        bad = {
            "truncate": good[: len(good) // 2],
            "garbage": b"corona" * 100,
            "flip": bytes(b ^ 0xFF if 64 <= i < 512 else b for i, b in enumerate(good)),
        }[damage]
        path.write_bytes(bad)
        _edit_json(path, lambda d: d.update(sha256=hashlib.sha256(bad).hexdigest()))
        with pytest.raises(ModelError, match=r"^model m\.tflite cannot be loaded: "):
            Model.load(path)

    def test_empty_file(self, exported: Callable[..., Any], tmp_path: Path) -> None:
        """A zero-byte model file is refused as empty."""
        path = _copy_model(exported("sigmoid", "int8").tflite_path, tmp_path)
        path.write_bytes(b"")
        with pytest.raises(ModelError, match=r"m\.tflite is empty"):
            Model.load(path)

    def test_wrong_input_size(self, narrow_input_model: Path) -> None:
        """A model whose input is not 513 wide is refused with its shape."""
        with pytest.raises(ModelError, match=r"narrow\.tflite: input shape is \(1, 512\)"):
            Model.load(narrow_input_model)


class TestDelegateFallback:
    def test_xnnpack_refusal_falls_back(self, quiet_int8_model: Path) -> None:
        """A model XNNPACK refuses to prepare loads on the builtin kernels, and that is logged."""
        with capture_logs() as logs:
            model = Model.load(quiet_int8_model)
        events = [e for e in logs if e["event"] == "model_default_delegate_refused"]
        assert len(events) == 1
        assert "XNNPACK" in events[0]["error"]
        assert events[0]["fallback"] == "builtin"
        assert np.isfinite(model.score(np.ones(N_BINS, np.float32)))

    def test_fallback_not_taken_for_good_model(self, exported: Callable[..., Any]) -> None:
        """A model XNNPACK accepts loads without the fallback warning."""
        with capture_logs() as logs:
            Model.load(exported("softmax", "int8").tflite_path)
        assert not [e for e in logs if e["event"] == "model_default_delegate_refused"]

    def test_without_resolver_choice_the_error_is_clear(self, quiet_int8_model: Path) -> None:
        """A runtime with no OpResolverType (old tflite_runtime) reports the delegate error."""
        runtime = pick_runtime()
        bare = Runtime(
            module=runtime.module, interpreter=runtime.interpreter, op_resolver_type=None
        )
        with pytest.raises(ModelError, match=r"^model q cannot be loaded: .*XNNPACK"):
            open_interpreter(bare, quiet_int8_model.read_bytes(), source="q")
