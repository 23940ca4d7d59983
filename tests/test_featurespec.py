"""daemon.analyse.featurespec: the model decides what it consumes; a contradicting config is an
error."""

from typing import Any

import numpy as np
import pytest

from daemon.analyse.featurespec import FeatureSpec, PhysicsSpec, resolve
from daemon.analyse.physics import NAMES, measure
from daemon.errors import ConfigError, ModelError


def metadata(spec: FeatureSpec) -> tuple[dict[str, Any], float]:
    return spec.to_metadata(), spec.window_s


def test_metadata_round_trip_with_and_without_physics() -> None:
    for spec in (FeatureSpec(), FeatureSpec(physics=None, transform="power_mean", window_s=5.0)):
        assert FeatureSpec.from_metadata(*metadata(spec)) == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update(center=False), "features.center is False, the daemon computes True"),
        (lambda f: f.update(window="hamming"), "features.window is 'hamming'"),
        (lambda f: f["physics"].update(version=7), "features.physics.version is 7"),
        (lambda f: f["physics"].update(line_hz=55), "features.physics.line_hz: expected 50, 60"),
        (lambda f: f["physics"].update(names=["loudness"]), "features.physics.names"),
        (lambda f: f.update(physics=[1]), "features.physics must be an object"),
        (lambda f: f.update(transform="sqrt"), "features.transform 'sqrt' is unknown"),
        (lambda f: f.pop("hop_length"), "missing: features.hop_length"),
    ],
)
def test_bad_metadata_names_the_field(change: Any, message: str) -> None:
    features, window_s = metadata(FeatureSpec())
    change(features)
    with pytest.raises(ValueError, match=message):
        FeatureSpec.from_metadata(features, window_s)


def test_window_s_must_be_a_positive_number() -> None:
    for bad in (0, -1, "30", True, float("nan")):
        with pytest.raises(ValueError, match="window_s is"):
            FeatureSpec.from_metadata(FeatureSpec().to_metadata(), bad)


@pytest.mark.parametrize(
    ("config", "key", "values"),
    [
        ({"n_fft": 2048}, "features.n_fft", ("2048", "1024")),
        ({"hop_length": 256}, "features.hop_length", ("256", "512")),
        ({"center": False}, "features.center", ("False", "True")),
        ({"window_s": 5.0}, "window.length_s", ("5.0", "30.0")),
    ],
)
def test_config_contradicting_the_model_is_an_error_naming_both(
    config: dict[str, Any], key: str, values: tuple[str, str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(FeatureSpec(), model_name="m.tflite", config=config)
    text = str(caught.value)
    assert text.startswith(key)
    assert all(value in text for value in values)
    assert "m.tflite" in text


def test_config_agreeing_or_silent_takes_the_model() -> None:
    spec = FeatureSpec()
    same = {"n_fft": 1024, "hop_length": 512, "window": "hann", "center": True, "window_s": 30.0}
    assert resolve(spec, model_name="m", config=same) == spec
    assert resolve(spec, model_name="m", config={}) == spec


def test_line_frequency_auto_model_takes_the_configured_grid() -> None:
    spec = FeatureSpec(physics=PhysicsSpec(line_hz="auto"))
    resolved = resolve(spec, model_name="m", config={"line_hz": 60})
    assert resolved.line_setting == 60
    fixed = FeatureSpec(physics=PhysicsSpec(line_hz=50))
    with pytest.raises(ConfigError, match=r"features\.line_hz is 60 in the config, but model m"):
        resolve(fixed, model_name="m", config={"line_hz": 60})
    assert resolve(fixed, model_name="m", config={"line_hz": "auto"}).line_setting == 50


def test_vector_and_model_input() -> None:
    spec = FeatureSpec()
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(44100)).astype(np.float32)
    means = np.full(spec.n_bins, 1e-4, np.float32)
    vector = spec.vector(means, measure(samples))
    assert vector.shape == (spec.n_bins + len(NAMES),)
    model_input = spec.model_input(vector)
    np.testing.assert_allclose(model_input[: spec.n_bins], -4.0, rtol=1e-6)
    # Physics values enter in bels (dB / 10); the depth stays a ratio.
    physics = measure(samples).select("auto")
    np.testing.assert_allclose(
        model_input[spec.n_bins :],
        [
            physics.mod_db / 10,
            physics.mod_depth,
            physics.hum_db / 10,
            physics.sub_db / 10,
            physics.crackle_db / 10,
        ],
        rtol=1e-5,
    )
    with pytest.raises(ModelError, match="expected vectors of 518 values"):
        spec.model_input(means)
    with pytest.raises(ModelError, match="needs the physics block"):
        spec.vector(means, None)
    assert FeatureSpec(physics=None).vector(means, None).shape == (spec.n_bins,)


def test_a_subset_of_physics_names_gives_those_values_in_that_order() -> None:
    spec = FeatureSpec(physics=PhysicsSpec(names=("hum_db", "mod_db")))
    samples = (0.1 * np.random.default_rng(1).standard_normal(44100)).astype(np.float32)
    measurement = measure(samples)
    physics = measurement.select("auto")
    means = np.ones(spec.n_bins, np.float32)
    assert spec.width == spec.n_bins + 2
    np.testing.assert_allclose(
        spec.vector(means, measurement)[-2:], [physics.hum_db, physics.mod_db]
    )
    batch = spec.vectors(np.stack([means, means]), np.stack([measurement.to_array()] * 2))
    assert batch.shape == (2, spec.width)
    np.testing.assert_allclose(batch[:, -2:], [[physics.hum_db, physics.mod_db]] * 2, rtol=1e-6)
