"""Shared fixtures: one data/cache dir per test session, wandb off, Hydra composition helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO / "conf")


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory):
    """MNIST IDX files and model cache shared by the session; outputs never land in the repo."""
    base = tmp_path_factory.mktemp("confprune")
    env = {
        "CONFPRUNE_DATA_DIR": os.environ.get("CONFPRUNE_TEST_DATA_DIR", str(base / "data")),
        "CONFPRUNE_CACHE_DIR": str(base / "cache"),
        "CONFPRUNE_OUTPUT_ROOT": str(base / "outputs"),
        "WANDB_MODE": "disabled",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "MPLBACKEND": "Agg",
        "CONFPRUNE_CACHE_SECRET": "confprune-tests",  # cache seals without touching ~/.config
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield base
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def compose():
    """compose(overrides, output_dir) → (DictConfig, typed Config) without running Hydra's app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    import confprune.run  # noqa: F401  (registers the schemas)

    def _compose(overrides: list[str], output_dir: str | Path = "/tmp/unused"):
        with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
            cfg = hydra_compose("config", overrides=[*overrides, f"paths.output_dir={output_dir}"])
        return cfg, OmegaConf.to_object(cfg)

    return _compose


@pytest.fixture(scope="module")
def pool():
    """A small classifier and a 3000-point pool whose labels are its own predictions with 2%
    flipped (dense error ~2%): certificates built and verified in seconds."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    x = torch.randn(3000, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.rand(3000, generator=torch.Generator().manual_seed(1)) < 0.02
    y[flip] = (y[flip] + 1) % 3
    return model, x, y
