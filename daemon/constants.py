"""The numbers the whole pipeline agrees on; each is written here once and imported elsewhere."""

from typing import Final

SAMPLE_RATE: Final = 44100
"""Hz. Every audio path (capture, replay, training) delivers mono float32 at this rate."""

N_FFT: Final = 1024
"""STFT frame length in samples (23 ms at 44.1 kHz); gives N_FFT // 2 + 1 = 513 frequency rows."""

HOP_LENGTH: Final = 512
"""STFT hop in samples (11.6 ms at 44.1 kHz)."""

N_BINS: Final = N_FFT // 2 + 1
"""Length of one feature vector (513)."""

WINDOW_S: Final = 30.0
"""Default length of one scored window in seconds."""
