"""Synthetic labelled tower audio (corona vs normal) for tests, demos and benchmarks.

`synthesize` writes a data set (WAVs + manifest.csv); `synthesize_clip` and `long_clip` return
samples without writing. Modules: signals (primitives), corona and background (sound sources),
scene (one clip), dataset (files and manifest).
"""

from train.synth.dataset import MANIFEST_COLUMNS, synthesize
from train.synth.scene import LABELS, ClipSpec, long_clip, render, synthesize_clip

__all__ = [
    "LABELS",
    "MANIFEST_COLUMNS",
    "ClipSpec",
    "long_clip",
    "render",
    "synthesize",
    "synthesize_clip",
]
