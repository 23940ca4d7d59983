"""corona-monitor edge daemon: numpy + a TFLite runtime only (never TensorFlow or librosa).

Data flow, one module per step:
audio block -> capture (ring buffer) -> windows -> features -> model -> verdict -> outbox -> publish
"""

__version__ = "0.1.0"
