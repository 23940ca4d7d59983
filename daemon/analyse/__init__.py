"""Analyse: features, the physics block, the model runner, the baseline, verdicts and the
alarm rule."""
