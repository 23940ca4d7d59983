"""corona-train: the workstation side (TensorFlow/Keras, librosa).

Reuses daemon's audio reading, features and TFLite runner; never reimplements them.
"""
