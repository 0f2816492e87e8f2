"""Typed configuration: dataclass schemas for Hydra's ConfigStore and start-up validation.

YAML files under ``conf/`` hold the values; these dataclasses are the schema (registered as
``base_*`` so they never show up as choices). A typo in a key or a wrong type fails at compose
time with the full key named; :func:`validate` then checks values and cross-field constraints
and raises :class:`ConfigError` naming the key, the value and what is allowed — before any data
is loaded or model trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """Invalid configuration value (key, value and what is allowed are in the message)."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


@dataclass
class GridConfig:
    start: float = 0.0
    stop: float = 0.99
    num: int = 100


@dataclass
class CalibrationConfig:
    alpha: float = 0.03
    delta: float = 0.05
    n_cal: int = 9000
    n_test: int = 1000
    n_splits: int = 1000
    # The λ grid: evenly spaced {start, stop, num} (like numpy.linspace), unless an explicit
    # strictly increasing list in [0, 1) is given as ``lambdas`` (e.g. calibration.lambdas=[0.4]).
    grid: GridConfig = field(default_factory=GridConfig)
    lambdas: list[float] | None = None
    split_seed: int = 0


@dataclass
class BoundConfig:
    name: str = MISSING


@dataclass
class FwerConfig:
    name: str = MISSING
    n_starts: int = 4  # multistart only


@dataclass
class LossConfig:
    name: str = MISSING
    tau: float = 0.5  # selective: abstention threshold on the max softmax; seg_fail: IoU threshold


@dataclass
class PruningConfig:
    criterion: str = "magnitude"
    scope: str = "global"  # global | layerwise
    include_bias: bool = True
    include_norm: bool = True
    seed: int = 0  # random criterion
    options: dict[str, Any] = field(default_factory=dict)  # criterion-specific settings


@dataclass
class TrajectoryConfig:
    """Weight-trajectory statistics for M&U (turned on by pruning=mu)."""

    enabled: bool = False
    last_k_epochs: int = 1
    granularity: str = "step"  # step | epoch


@dataclass
class TrainerConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    scheduler: str = "none"  # none | cosine (per-step cosine annealing to 0)
    weight_decay: float = 0.0
    eval_batch_size: int = 2000
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)


@dataclass
class SweepConfig:
    batch_size: int = 500
    early_stop: bool = False
    device: str = "cpu"
    progress: bool = True
    num_threads: int | None = None  # torch intra-op threads per job (None: torch's default; joblib caps it)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    mode: str = "offline"  # offline | online | disabled
    project: str = "confprune"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    cache_dir: str = MISSING
    output_root: str = MISSING
    output_dir: str = MISSING


@dataclass
class Config:
    name: str = "default"
    seed: int = 0
    model: Any = MISSING
    dataset: Any = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    bound: BoundConfig = field(default_factory=BoundConfig)
    fwer: FwerConfig = field(default_factory=FwerConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    figures: bool = True
    export: bool = True


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    # One schema for the whole tree: every group's node is typed through Config's fields, so a
    # wrong key or type in any group file or override fails at compose time.
    ConfigStore.instance().store(name="base_config", node=Config)


# --------------------------------------------------------------------------------------------
# Validation


def calibration_grid(cal: CalibrationConfig) -> list[float]:
    """The validated λ grid of a calibration config: ``lambdas`` if given, else ``grid``."""
    if cal.lambdas is not None:
        return lambda_grid(list(cal.lambdas), "calibration.lambdas")
    return lambda_grid(dataclasses.asdict(cal.grid) if dataclasses.is_dataclass(cal.grid) else cal.grid, "calibration.grid")


def lambda_grid(spec: Any, key: str = "calibration.lambdas") -> list[float]:
    """Turn a grid spec ({start, stop, num} or a list) into a validated list of λ values."""
    if isinstance(spec, DictConfig) or OmegaConf.is_list(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, dict):
        unknown = set(spec) - {"start", "stop", "num"}
        if unknown or not {"start", "stop", "num"} <= set(spec):
            raise ConfigError(key, spec, "a mapping with exactly the keys start, stop, num, or a list")
        start, stop, num = spec["start"], spec["stop"], spec["num"]
        if not isinstance(num, int) or num < 1:
            raise ConfigError(f"{key}.num", num, "an integer ≥ 1")
        if num == 1:
            grid = [float(start)]
        else:
            # Rounded so that 0.01·k prints as 0.01·k (λ values go into file names and tables).
            step = (float(stop) - float(start)) / (num - 1)
            grid = [round(float(start) + step * i, 10) for i in range(num)]
    elif isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError(key, spec, "a non-empty list")
        try:
            grid = [float(x) for x in spec]
        except (TypeError, ValueError):
            raise ConfigError(key, spec, "a list of numbers") from None
    elif isinstance(spec, (int, float)):
        grid = [float(spec)]
    else:
        raise ConfigError(key, spec, "{start, stop, num} or a list of numbers in [0, 1)")
    for x in grid:
        if not (math.isfinite(x) and 0.0 <= x < 1.0):
            raise ConfigError(key, spec, "values in [0, 1) (λ = 1 would prune everything)")
    if any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise ConfigError(key, spec, "a strictly increasing grid")
    return grid


def _in_open_unit(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ConfigError(key, value, "a number in the open interval (0, 1)")


def _choice(key: str, value: Any, allowed: list[str] | tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, ", ".join(sorted(allowed)))


def validate(cfg: Config, pool_size: int | None = None) -> list[float]:
    """Check values and cross-field constraints of a composed config; returns the λ grid.

    Raises :class:`ConfigError` before any expensive work. ``pool_size`` (the evaluation pool's
    size, known cheaply from the dataset config) enables the n_cal + n_test check.
    """
    from . import losses as losses_mod
    from .data import DATASETS
    from .models import MODELS
    from .pruning import ALL_CRITERIA, SCOPES
    from .stats import BINARY_ONLY, BOUNDS, FWERS

    cal = cfg.calibration
    _in_open_unit("calibration.alpha", cal.alpha)
    _in_open_unit("calibration.delta", cal.delta)
    for key, value, lo in (("n_cal", cal.n_cal, 1), ("n_test", cal.n_test, 0), ("n_splits", cal.n_splits, 1)):
        if not isinstance(value, int) or value < lo:
            raise ConfigError(f"calibration.{key}", value, f"an integer ≥ {lo}")
    grid = calibration_grid(cal)
    if pool_size is not None and cal.n_cal + cal.n_test > pool_size:
        raise ConfigError(
            "calibration.n_cal + calibration.n_test",
            cal.n_cal + cal.n_test,
            f"at most the evaluation pool size {pool_size} (dataset {cfg.dataset['name']!r})",
        )
    _choice("bound.name", cfg.bound.name, BOUNDS)
    _choice("fwer.name", cfg.fwer.name, FWERS)
    if cfg.fwer.n_starts < 1:
        raise ConfigError("fwer.n_starts", cfg.fwer.n_starts, "an integer ≥ 1")
    _choice("loss.name", cfg.loss.name, list(losses_mod.LOSSES))
    loss = losses_mod.LOSSES[cfg.loss.name]
    if cfg.bound.name in BINARY_ONLY and not loss.binary:
        binary = sorted(k for k, v in losses_mod.LOSSES.items() if v.binary)
        raise ConfigError(
            "bound.name",
            cfg.bound.name,
            f"hb, hoeffding, bentkus or wsr with the non-binary loss {cfg.loss.name!r} "
            f"(binomial needs a binary loss: {', '.join(binary)})",
        )
    _in_open_unit("loss.tau", cfg.loss.tau)
    _choice("pruning.criterion", cfg.pruning.criterion, list(ALL_CRITERIA))
    _choice("pruning.scope", cfg.pruning.scope, SCOPES)
    _choice("model.name", cfg.model.get("name"), list(MODELS))
    _choice("dataset.name", cfg.dataset.get("name"), list(DATASETS))
    task = DATASETS[cfg.dataset["name"]].task
    if loss.task != task:
        allowed = sorted(k for k, v in losses_mod.LOSSES.items() if v.task == task)
        raise ConfigError("loss.name", cfg.loss.name, f"a {task} loss: {', '.join(allowed)}")
    _choice("logger.name", cfg.logger.name, ["none", "wandb"])
    _choice("logger.mode", cfg.logger.mode, ["offline", "online", "disabled"])
    _choice("trainer.optimizer", cfg.trainer.optimizer, ["adam", "sgd"])
    _choice("trainer.scheduler", cfg.trainer.scheduler, ["none", "cosine"])
    traj = cfg.trainer.trajectory
    _choice("trainer.trajectory.granularity", traj.granularity, ["step", "epoch"])
    if traj.enabled and not 1 <= traj.last_k_epochs <= cfg.trainer.epochs:
        raise ConfigError("trainer.trajectory.last_k_epochs", traj.last_k_epochs, f"an integer in [1, trainer.epochs={cfg.trainer.epochs}]")
    if cfg.pruning.criterion == "mu" and not traj.enabled:
        raise ConfigError("trainer.trajectory.enabled", False, "true with pruning.criterion=mu (M&U needs the weight trajectory)")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        value = getattr(cfg.trainer, key)
        if not isinstance(value, int) or value < (0 if key == "epochs" else 1):
            raise ConfigError(f"trainer.{key}", value, "a positive integer")
    if not cfg.trainer.lr > 0:
        raise ConfigError("trainer.lr", cfg.trainer.lr, "a positive number")
    if cfg.sweep.batch_size < 1:
        raise ConfigError("sweep.batch_size", cfg.sweep.batch_size, "an integer ≥ 1")
    if not (cfg.sweep.device == "cpu" or cfg.sweep.device.startswith("cuda")):
        raise ConfigError("sweep.device", cfg.sweep.device, "cpu, cuda or cuda:<index>")
    return grid
