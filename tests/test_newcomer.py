"""Issue 24 (newcomer fixes, first ones): the planner's CLI refuses impossible levels in one line
and takes δ from its pilot run, a DataLoader sweep's progress bar ends at its total, a custom
loss records whether it saw labels, and every CLI has a console script."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import confprune
from confprune.plan import main as plan_main
from confprune.sweep import LossTable

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pilot(tmp_path):
    rng = np.random.default_rng(0)
    losses = (rng.random((6, 400)) < np.linspace(0, 0.1, 6)[:, None]).astype(np.float32)
    LossTable(grid=np.linspace(0, 0.5, 6), losses=losses, sparsity=np.linspace(0, 0.5, 6)).save(tmp_path / "losses.npz")
    return tmp_path


@pytest.mark.parametrize("args,needle", [
    (["--alpha", "5", "--n-cal", "100"], "--alpha=5.0"),
    (["--alpha", "0.05", "--delta", "0", "--n-cal", "100"], "--delta=0.0"),
    (["--alpha", "0.05", "--n-cal", "0"], "--n-cal=0"),
])
def test_the_planner_refuses_impossible_levels_in_one_line(pilot, capsys, args, needle):
    assert plan_main([str(pilot), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "math domain" not in err[0]


def test_the_planner_takes_delta_from_its_pilot_run(pilot, capsys, monkeypatch):
    import confprune.plan as plan_mod

    assert plan_main([str(pilot), "--alpha", "0.2", "--n-cal", "300", "--reps", "50"]) == 0
    assert "delta=0.05" in capsys.readouterr().out  # no summary.json: the default
    monkeypatch.setattr(plan_mod, "_pilot_delta", lambda run_dir: 0.2)  # a run that used δ = 0.2
    assert plan_main([str(pilot), "--alpha", "0.2", "--n-cal", "300", "--reps", "50"]) == 0
    assert "delta=0.2" in capsys.readouterr().out


def test_a_dataloader_sweep_ends_its_bar_at_the_total():
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(700, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm's TqdmWarning when the count passes the total
        res = confprune.certify(model, DataLoader(TensorDataset(x, y), batch_size=70), progress=True,
                                measure_cost=False, lambdas=[round(0.1 * i, 1) for i in range(7)])
    assert res.calibration.n == 700


def test_a_custom_loss_records_whether_it_saw_labels():
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(300, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    wrong = confprune.certify(model, (x, y), loss=lambda d, p, t: (p.argmax(1) != t).float(), measure_cost=False)
    assert wrong.certificate["loss"]["labeled"] is True
    apart = confprune.certify(model, x, loss=lambda d, p, t: (p.argmax(1) != d.argmax(1)).float(), measure_cost=False)
    assert apart.certificate["loss"]["labeled"] is False


def test_every_cli_has_a_console_script():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"confprune-run": "confprune.run:main", "confprune-verify": "confprune.verify:main",
                       "confprune-plan": "confprune.plan:main", "confprune-figures": "confprune.figures:main"}


def test_the_console_leads_with_the_exact_check(caplog):
    """The first coverage a newcomer reads is the i.i.d. one the guarantee bounds; the paper's
    split coverage follows, labelled as the noisy finite-pool check (0.930 is not a failure)."""
    import logging
    from types import SimpleNamespace

    from confprune.run import _report

    s = SimpleNamespace(
        lambda_hat=SimpleNamespace(deploy=0.92), sparsity_hat=SimpleNamespace(deploy=0.92), certified_fraction=1.0,
        n_splits=1000, coverage=0.930, coverage_ci=[0.913, 0.945], iid_coverage=1.0, iid_coverage_ci=[0.996, 1.0],
        delta=0.05, dense={"accuracy": 0.9915}, experiment="mnist", loss="label_01", criterion="magnitude",
        scope="global", structure="unstructured", bound="hb", fwer="fixed_sequence", alpha=0.05, cost={})
    with caplog.at_level(logging.INFO, logger="confprune"):
        _report(s)
    line = caplog.text
    assert line.index("i.i.d. coverage 1.000") < line.index("split coverage")
    assert "the guarantee's exact check, target >= 0.95" in line and "not bounded by the guarantee) 0.930" in line


@pytest.mark.parametrize("overrides,missing,key,extra", [
    (["logger=wandb"], "wandb", "logger.name", "tracking"),
    (["figures=true"], "matplotlib", "figures", "pipeline"),
    (["experiment=polyp_smoke"], "albumentations", "dataset.name", "segmentation"),
    (["pruning=channel"], "torch_pruning", "pruning.structure", "channel"),
])
def test_a_missing_extra_is_named_before_any_work(compose, monkeypatch, overrides, missing, key, extra):
    import importlib.util

    from confprune.errors import ConfigError
    from confprune.schema import check_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    _, cfg = compose(["experiment=mnist_smoke", *overrides] if "experiment" not in overrides[0] else overrides)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert err.value.key == key and f'confprune[{extra}]' in str(err.value), str(err.value)


def test_every_entry_point_has_the_same_defaults(compose):
    import inspect

    import confprune
    from confprune.defaults import DEFAULT_ALPHA, DEFAULT_DELTA
    from confprune.multiknob import certify_pareto
    from confprune.pruning import FamilySpec

    _, cfg = compose([])
    assert (cfg.calibration.alpha, cfg.calibration.delta) == (DEFAULT_ALPHA, DEFAULT_DELTA)  # the YAML
    api = inspect.signature(confprune.certify).parameters
    assert (api["alpha"].default, api["delta"].default) == (DEFAULT_ALPHA, DEFAULT_DELTA)
    assert inspect.signature(certify_pareto).parameters["delta"].default == DEFAULT_DELTA
    assert (api["include_bias"].default, api["include_norm"].default) == (FamilySpec.include_bias,
                                                                          FamilySpec.include_norm)
    assert cfg.pruning["include_norm"] == FamilySpec.include_norm  # conf/pruning/magnitude.yaml
