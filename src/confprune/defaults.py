"""Defaults every entry point shares (the Hydra config, ``certify``, ``certify_pareto``): the
paper's setting, α = 0.03 and δ = 0.05. conf/calibration/default.yaml repeats them (Hydra reads
YAML); tests/test_newcomer.py checks that the two agree."""

DEFAULT_ALPHA = 0.03
DEFAULT_DELTA = 0.05
