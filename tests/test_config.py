"""Hydra composition, schemas and start-up validation: bad input fails early and clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError, ValidationError

from confprune.pipeline import check
from confprune.schema import Config, ConfigError, calibration_grid, lambda_grid

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [
    (group, p.stem)
    for group in ("model", "loss", "bound", "fwer", "pruning", "trainer", "logger")
    for p in sorted((REPO / "conf" / group).glob("*.yaml"))
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(compose, experiment):
    cfg, obj = compose([f"experiment={experiment}"])
    assert isinstance(obj, Config)
    grid = check(obj)
    assert grid[0] == 0.0 and all(0 <= x < 1 for x in grid)
    assert obj.name == experiment


@pytest.mark.parametrize("group,option", GROUP_OPTIONS)
def test_every_group_option_composes(compose, group, option, tmp_path):
    import torch

    from confprune.losses import LOSSES
    from confprune.models import MnistCNN

    overrides = [f"{group}={option}"]
    if (group == "loss" and LOSSES[option].task == "pitch") or (group == "model" and option == "crepe"):
        overrides.insert(0, "experiment=crepe_tiny_smoke")  # CREPE and its pitch losses on audio frames
    if group == "model" and option == "checkpoint":  # a user's state_dict and its class
        torch.save(MnistCNN().state_dict(), tmp_path / "net.pt")
        overrides += [f"model.path={tmp_path / 'net.pt'}", "model.target=confprune.models:MnistCNN"]
    if group == "loss" and LOSSES[option].task == "segmentation":
        overrides.insert(0, "experiment=polyp_smoke")  # a segmentation loss needs a segmentation task
    if group == "model" and option == "unet":
        overrides.insert(0, "experiment=polyp_smoke")  # the U-Net takes 3-channel images and segments them
    if group == "loss" and not LOSSES[option].binary:
        overrides.append("bound=hb")  # the binomial bound is refused for fractional losses
    _, obj = compose(overrides)
    check(obj)


def test_default_is_the_paper_setting(compose):
    _, obj = compose([])
    assert (obj.calibration.alpha, obj.calibration.delta) == (0.03, 0.05)
    assert (obj.calibration.n_cal, obj.calibration.n_test) == (9000, 1000)
    grid = calibration_grid(obj.calibration)
    assert len(grid) == 100 and grid[1] == 0.01 and grid[-1] == 0.99


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("calibration.alpha=1.5", "calibration.alpha", "open interval (0, 1)"),
        ("calibration.alpha=0", "calibration.alpha", "open interval (0, 1)"),
        ("calibration.delta=1", "calibration.delta", "open interval (0, 1)"),
        ("calibration.lambdas=[0.0,0.5,0.3]", "calibration.lambdas", "strictly increasing"),
        ("calibration.lambdas=[0.0,0.5,1.0]", "calibration.lambdas", "[0, 1)"),
        ("calibration.grid.stop=1.0", "calibration.grid", "[0, 1)"),
        ("calibration.grid.num=0", "calibration.grid.num", "integer ≥ 1"),
        ("calibration.n_cal=9500", "calibration.n_cal + calibration.n_test", "pool size 10000"),
        ("calibration.n_splits=0", "calibration.n_splits", "integer ≥ 1"),
        ("loss=tv_distance", "bound.name", "non-binary loss 'tv_distance'"),
        ("fwer=holm sweep.early_stop=true", "sweep.early_stop", "fixed_sequence"),
        ("loss=selective loss.tau=2", "loss.tau", "open interval"),
        ("+loss.tau=0.5", "loss.tau", "keyword arguments of loss 'label_01': no options"),
        ("+dataset.pool_limt=5", "dataset.pool_limt", "pool_limit"),
        ("+model.chanels=[8,16]", "model.chanels", "channels"),
        ("model.hidden=big", "model.hidden", "int"),
        ("fwer=multistart fwer.n_starts=0", "fwer.n_starts", "integer ≥ 1"),
        ("+fwer.n_start=3", "fwer.n_start", "keyword arguments of fwer 'fixed_sequence'"),
        ("pruning=mu +pruning.epz=0.1", "pruning.epz", "eps"),
        ("pruning.scope=layer", "pruning.scope", "global, layerwise"),
        ("pruning.criterion=magnitud", "pruning.criterion", "magnitude"),
    ],
)
def test_invalid_values_name_key_value_and_allowed(compose, override, key, allowed):
    _, obj = compose(override.split())
    with pytest.raises(ConfigError) as info:
        check(obj)
    msg = str(info.value)
    assert key in msg and allowed in msg, msg


def test_unknown_group_option_lists_the_choices(compose):
    with pytest.raises(MissingConfigException) as info:
        compose(["bound=binomal"])
    msg = str(info.value)
    assert "binomal" in msg and "binomial" in msg and "wsr" in msg


def test_typo_in_key_fails_at_compose_time(compose):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as info:
        compose(["calibration.alhpa=0.1"])
    assert "alhpa" in str(info.value)


def test_wrong_type_fails_at_compose_time(compose):
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        compose(["calibration.n_cal=many"])
    assert "n_cal" in str(info.value)


def test_cli_rejects_bad_config_before_any_work(tmp_path):
    env = {**os.environ, "CONFPRUNE_CACHE_DIR": str(tmp_path / "cache"), "CONFPRUNE_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run(
        [sys.executable, "-m", "confprune.run", "experiment=mnist_smoke", "calibration.delta=1.5",
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert proc.returncode != 0
    assert "calibration.delta=1.5" in proc.stderr + proc.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "data").exists()  # nothing loaded or trained


def test_explicit_lambdas_override_the_grid(compose):
    _, obj = compose(["calibration.lambdas=[0.0,0.4]"])
    assert calibration_grid(obj.calibration) == [0.0, 0.4]


def test_lambda_grid_forms():
    assert lambda_grid({"start": 0.0, "stop": 0.9, "num": 4}) == [0.0, 0.3, 0.6, 0.9]
    assert lambda_grid([0.4]) == [0.4]
    assert lambda_grid(0.4) == [0.4]
    with pytest.raises(ConfigError, match="start, stop, num"):
        lambda_grid({"start": 0.0, "stop": 0.9})
