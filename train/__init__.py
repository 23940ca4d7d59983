"""corona-train: the workstation side (TensorFlow/Keras, librosa). Reuses daemon's audio, features and runner."""
