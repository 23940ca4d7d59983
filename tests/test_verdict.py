"""daemon.analyse.verdict directly: every sensor state from real windows (or, for the flat-line
rule,
a window whose row means are set by hand), and the payload verdict.build really produces
validated against the published JSON Schema."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest

from daemon import schemas
from daemon.analyse import verdict
from daemon.analyse.baseline import Reading
from daemon.constants import SAMPLE_RATE
from daemon.listen.windows import Window, windows_of


def _window(samples: np.ndarray) -> Window:
    return windows_of(samples.astype(np.float32), length_s=1.0)[0]


def _noise(level: float, seed: int = 1) -> np.ndarray:
    return level * np.random.default_rng(seed).standard_normal(SAMPLE_RATE)


class TestSensorState:
    def test_noise_is_ok(self) -> None:
        assert verdict.sensor_state(_window(_noise(0.05))) == "ok"

    def test_digital_silence_is_silent(self) -> None:
        """All-zero samples: a dead or muted microphone."""
        assert verdict.sensor_state(_window(np.zeros(SAMPLE_RATE))) == "silent"

    def test_overdriven_input_is_clipping(self) -> None:
        """Loud noise clipped at full scale on more than 5 % of the samples."""
        samples = np.clip(_noise(2.0), -1.0, 1.0)
        window = _window(samples)
        assert window.clipped > verdict.CLIPPING_FRACTION
        assert verdict.sensor_state(window) == "clipping"

    @pytest.mark.parametrize("offset", [0.3, 0.003, -0.5, 98 / 32768])
    def test_dc_offset_without_sound_is_flat(self, offset: float) -> None:
        """A constant value (a stuck converter, an offset with a dead capsule) has a level but
        no sound: `flat`, at any offset. On the old spectral rule alone 0.3 read `ok`."""
        window = _window(np.full(SAMPLE_RATE, offset))
        assert window.level_dbfs > verdict.SILENT_BELOW_DBFS
        assert verdict.sensor_state(window) == "flat"

    def test_one_lsb_toggling_is_flat(self) -> None:
        """A converter stuck toggling its lowest bit (+-1/32768, -90.3 dBFS of AC) on an offset."""
        toggling = 0.2 + np.where(np.arange(SAMPLE_RATE) % 2, 1.0, -1.0) / 32768
        assert verdict.sensor_state(_window(toggling)) == "flat"

    def test_offset_with_sound_on_it_is_ok(self) -> None:
        """A cheap ADC's few-percent offset under real sound is a working microphone."""
        assert verdict.sensor_state(_window(0.03 + _noise(0.01))) == "ok"

    def test_power_only_in_the_lowest_bins_is_flat(self) -> None:
        """The flat-line rule on its own: all power in bins 0-1 reads `flat`, and so does no
        power at all above the silence floor."""
        window = _window(_noise(0.05))
        features = np.zeros_like(window.features)
        features[:2] = 1.0
        assert verdict.sensor_state(dataclasses.replace(window, features=features)) == "flat"
        empty = np.zeros_like(window.features)
        assert verdict.sensor_state(dataclasses.replace(window, features=empty)) == "flat"


class TestBuild:
    @pytest.mark.parametrize(
        "reading",
        [
            Reading("off", None, None, 0, 0),
            Reading("learning", None, None, 3, 10),
            Reading("ready", 12.5, 0.62, 10, 10),
        ],
    )
    def test_real_payload_is_schema_valid(self, reading: Reading) -> None:
        """What build returns for a real window validates, with the baseline in every state."""
        window = _window(_noise(0.05))
        built = verdict.build(
            node="n1",
            window=window,
            stream_start=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
            score=0.25,
            threshold=0.5,
            model=verdict.ModelRef("m", "a" * 64, "one-class"),
            overflows=0,
            source="live",
            label_by="both",
            baseline=reading,
        )
        payload = built.with_seq(7).payload()
        schemas.validate("verdict", payload)
        assert payload["seq"] == 7
        assert built.seq == 0  # with_seq is a copy: a Verdict is frozen
        assert payload["label"] == "normal"
        assert payload["model"]["kind"] == "one-class"
        assert payload["baseline"]["state"] == reading.state
        assert payload["window_end"] == "2026-12-01T12:00:01.000Z"

    def test_label_given_by_the_rule_wins(self) -> None:
        """The pipeline's label (alarm.use) is the payload's, whatever the model's score says."""
        payload = verdict.build(
            node="n1",
            window=_window(_noise(0.05)),
            stream_start=datetime(2026, 12, 1, tzinfo=UTC),
            score=0.9,
            threshold=0.5,
            model=verdict.ModelRef("m", "b" * 64),
            overflows=0,
            source="replay",
            label="normal",
            label_by="both",
        ).payload()
        assert (payload["label"], payload["label_by"], payload["score"]) == ("normal", "both", 0.9)
