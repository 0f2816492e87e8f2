"""Typed configuration: dataclass schemas for Hydra's ConfigStore and the start-up config check.

YAML files under ``conf/`` hold the values; these dataclasses are the schema (registered as
``base_*`` so they never show up as choices). A typo in a key or a wrong type of a typed group
fails at compose time with the full key named. The groups that build an object — ``model``,
``dataset``, ``loss``, ``fwer``, ``pruning`` — follow one convention: their keys (besides ``name``
or ``criterion``) are the keyword arguments of the registered factory, and :func:`check_options`
checks them against its signature. :func:`check_config` then checks values and cross-field
constraints and raises :class:`ConfigError` naming the key, the value and what is allowed —
before any data is loaded or model trained. ("check" is the word for configs; "validate" is kept
for the coverage checks of the guarantee.)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from .defaults import DEFAULT_ALPHA, DEFAULT_DELTA
from .errors import ConfigError, OptionError
from .options import check_options, options_of  # noqa: F401  (re-exported: the config check's helpers)


@dataclass
class GridConfig:
    start: float = 0.0
    stop: float = 0.99
    num: int = 100


@dataclass
class CalibrationConfig:
    alpha: float = DEFAULT_ALPHA
    delta: float = DEFAULT_DELTA
    n_cal: int = 9000
    n_test: int = 1000
    n_splits: int = 1000
    # The λ grid: evenly spaced {start, stop, num} (like numpy.linspace), unless an explicit
    # strictly increasing list in [0, 1) is given as ``lambdas`` (e.g. calibration.lambdas=[0.4]).
    grid: GridConfig = field(default_factory=GridConfig)
    lambdas: list[float] | None = None
    split_seed: int = 0
    # Several risks at once (replaces loss / alpha / bound when set): a list of
    # {loss, alpha, bound?, per_class?, gamma?}; loss "accuracy_drop" is the drop vs the dense model.
    risks: list[dict[str, Any]] | None = None


@dataclass
class BoundConfig:
    name: str = MISSING


@dataclass
class TrajectoryConfig:
    """Weight-trajectory statistics for M&U (turned on by pruning=mu)."""

    enabled: bool = False
    last_k_epochs: int = 1
    granularity: str = "step"  # step | epoch
    # Also keep Welford statistics of the per-step updates Δw (M&U with pruning.sigma=updates;
    # three more copies of the parameters in memory, a separately cached model).
    track_updates: bool = False


#: the file formats a run's figures can be written in (``figure_formats``)
FIGURE_FORMATS = ("png", "pdf", "svg")


@dataclass
class TrainerConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    scheduler: str = "none"  # none | cosine (per-step cosine annealing to 0)
    weight_decay: float = 0.0
    eval_batch_size: int = 2000
    # torch threads while training. Float reductions are split by thread, so the trained weights
    # are bit-exact only at one thread count (measured: the smoke CNN trained with 1 and 2
    # threads differ); 2, the count every committed model was trained with, reproduces them on
    # any machine. null: torch's default (the machine's cores), recorded in the model's cache key.
    num_threads: int | None = 2
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)


@dataclass
class SweepConfig:
    batch_size: int = 500
    early_stop: bool = False
    device: str = "cpu"
    progress: bool = True
    share_losses: bool = True  # compute (and cache) the task's other losses in the same pass of the network
    num_threads: int | None = None  # torch intra-op threads per job (None: torch's default; joblib caps it)
    tune_allocator: bool = True  # raise glibc's mmap/trim thresholds (confprune.forward.tune_allocator)


@dataclass
class KnobsConfig:
    """A declared family of configurations for Pareto testing (``knobs=...``): each entry of
    ``families`` is a knob (criterion, structure, scope, quantize); every λ of the calibration grid
    applies to each. ``objective``: the cost minimised (macs, bytes, latency)."""

    families: list[dict[str, Any]] = field(default_factory=list)
    objective: str = "macs"
    opt_fraction: float = 0.5
    validation_reps: int = 200  # i.i.d. calibration draws of the exact check (Pareto testing per draw)


@dataclass
class CostConfig:
    """What the cost of a pruned model is measured with (parameters, MACs and bytes always)."""

    latency: bool = True  # measure CPU latency of the dense, the certified and a few grid models
    latency_points: int = 3  # grid points besides λ̂ and the dense model (evenly spaced over the evaluated grid)
    latency_batches: list[int] = field(default_factory=lambda: [1])  # plus sweep.batch_size


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
    # Factory groups: ``name`` (``criterion`` for pruning) plus the factory's keyword arguments,
    # checked against its signature by check_config (see check_options).
    model: dict[str, Any] = MISSING
    dataset: dict[str, Any] = MISSING
    loss: dict[str, Any] = MISSING
    bound: BoundConfig = field(default_factory=BoundConfig)
    fwer: dict[str, Any] = MISSING
    pruning: dict[str, Any] = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    knobs: KnobsConfig | None = None  # Pareto testing over several knobs (conf/knobs); None: one family
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    figures: bool = True
    figure_formats: list[str] = field(default_factory=lambda: ["png"])  # of FIGURE_FORMATS
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
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise ConfigError(key, value, "a number in the open interval (0, 1)")


def _choice(key: str, value: Any, allowed: list[str] | tuple[str, ...] | Mapping[str, Any]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, ", ".join(sorted(allowed)))


def _built(group: str, build: Callable[[], Any]) -> Any:
    """Build a group's object so that its own checks run now; an :class:`OptionError` is re-raised
    under the full config key."""
    try:
        return build()
    except OptionError as err:
        raise ConfigError(f"{group}.{err.key}", err.value, err.allowed) from None
    except OSError as err:  # files a group names that cannot be read (a dataset tree with a missing mask)
        raise ConfigError(group, str(getattr(err, "filename", None) or group), f"readable files ({err})") from None


def check_config(cfg: Config) -> list[float]:
    """Check values and cross-field constraints of a composed config; returns the λ grid.

    Raises :class:`ConfigError` before any expensive work (no data is loaded, nothing trained).
    The evaluation pool's size, when the dataset knows it cheaply, bounds n_cal + n_test; the
    model is built (untrained) and run on two dummy inputs of the dataset's shape, so a model
    that does not fit the data, or a criterion that does not fit the model, fails here.
    """
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ConfigError("seed", cfg.seed, "an integer in [0, 2^32)")
    _check_extras(cfg)
    grid = _check_calibration(cfg.calibration)
    _check_factory_groups(cfg)
    _check_training_and_sweep(cfg)
    _check_model_fits(cfg)
    return grid


def _check_calibration(cal: CalibrationConfig) -> list[float]:
    _in_open_unit("calibration.alpha", cal.alpha)
    _in_open_unit("calibration.delta", cal.delta)
    for key, value, lo in (("n_cal", cal.n_cal, 1), ("n_test", cal.n_test, 0), ("n_splits", cal.n_splits, 1)):
        if not isinstance(value, int) or value < lo:
            raise ConfigError(f"calibration.{key}", value, f"an integer ≥ {lo}")
    if isinstance(cal.split_seed, bool) or not isinstance(cal.split_seed, int) or not 0 <= cal.split_seed < 2**32:
        raise ConfigError("calibration.split_seed", cal.split_seed, "an integer in [0, 2^32)")
    return calibration_grid(cal)


def _check_risks(cfg: Config, task: str) -> None:
    from .losses import LOSSES
    from .stats import BOUNDS, DROP_METHODS, get_bound

    risks = cfg.calibration.risks
    if not risks:
        return
    if cfg.sweep.early_stop:
        raise ConfigError("sweep.early_stop", True, "false with calibration.risks (the stop rule follows one risk)")
    fields = {"loss", "alpha", "bound", "per_class", "gamma"}
    for i, r in enumerate(risks):
        key = f"calibration.risks[{i}]"
        if not isinstance(r, Mapping) or "loss" not in r or "alpha" not in r or set(r) - fields:
            raise ConfigError(key, r, f"a mapping with loss and alpha, and optionally {', '.join(sorted(fields - {'loss', 'alpha'}))}")
        drop = r["loss"] == "accuracy_drop"
        if not drop and (r["loss"] not in LOSSES or LOSSES[r["loss"]].task != task):
            allowed = sorted(k for k, v in LOSSES.items() if v.task == task) + (["accuracy_drop"] if task == "classification" else [])
            raise ConfigError(f"{key}.loss", r["loss"], f"a {task} loss: {', '.join(allowed)}")
        alpha = r["alpha"]
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            # a drop of 0 can never be certified (at λ = 0 the drop is 0, and "≤ 0" needs it < 0)
            raise ConfigError(f"{key}.alpha", alpha, "a number in the open interval (0, 1)")
        bound = r.get("bound", "auto")
        allowed_bounds = ("auto", *DROP_METHODS) if drop else ("auto", *BOUNDS)
        if drop and cfg.knobs is not None:  # Pareto testing tests the drop's shifted mean with WSR
            allowed_bounds = ("auto", "wsr")
        if bound not in allowed_bounds:
            raise ConfigError(f"{key}.bound", bound, ", ".join(allowed_bounds))
        gamma = r.get("gamma")
        if gamma is not None and (not drop or isinstance(gamma, bool) or not isinstance(gamma, (int, float))
                                  or not 0 < gamma < 1):
            raise ConfigError(f"{key}.gamma", gamma, "a number in (0, 1), for accuracy_drop only")
        entry = get_bound(bound) if bound in BOUNDS else None  # None: auto, or a drop method
        if not drop and entry is not None and entry.binary_only and not LOSSES[r["loss"]].binary:
            raise ConfigError(f"{key}.bound", bound, f"a bound for any loss in [0, 1] ({r['loss']} is not binary)")
        if r.get("per_class") and (drop or task != "classification" or (entry is not None and entry.sequential)):
            raise ConfigError(f"{key}.per_class", True, "false, or a classification loss with a non-sequential bound")


def family_specs(cfg: Config) -> list[Any]:
    """The run's pruning families, checked: ``pruning`` alone, or every entry of
    ``knobs.families`` (Pareto testing) on top of ``pruning``'s own fields (its criterion options
    stay with it). Raises :class:`ConfigError` naming ``pruning.<key>`` or
    ``knobs.families[i].<key>``."""
    from .pruning import FamilySpec

    base = FamilySpec.from_config(cfg.pruning, group="pruning")
    if cfg.knobs is None:
        return [base]
    if not cfg.knobs.families:
        raise ConfigError("knobs.families", cfg.knobs.families, "a non-empty list of pruning families "
                          f"(mappings with {', '.join(FamilySpec.field_names())} and criterion options)")
    specs = [base.knob(fam, group=f"knobs.families[{i}]") for i, fam in enumerate(cfg.knobs.families)]
    if len(set(map(repr, specs))) < len(specs):
        raise ConfigError("knobs.families", [s.label for s in specs], "distinct families")
    return specs


def _check_knobs(cfg: Config) -> None:
    knobs = cfg.knobs
    if knobs is None:
        return
    _choice("knobs.objective", knobs.objective, ["macs", "nonzero_macs", "bytes", "latency"])
    _in_open_unit("knobs.opt_fraction", knobs.opt_fraction)
    if cfg.sweep.early_stop:
        raise ConfigError("sweep.early_stop", True, "false with knobs (Pareto testing needs every configuration)")
    if cfg.fwer.get("name") != "fixed_sequence" or len(cfg.fwer) > 1:
        raise ConfigError("fwer.name", cfg.fwer.get("name"),
                          "fixed_sequence with knobs (Pareto testing tests its ordered front in fixed sequence)")
    reps = knobs.validation_reps
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ConfigError("knobs.validation_reps", reps, "an integer ≥ 1")
    if any(r.get("per_class") for r in cfg.calibration.risks or [] if isinstance(r, Mapping)):
        raise ConfigError("calibration.risks", cfg.calibration.risks, "risks without per_class with knobs "
                          "(list the classes as risks instead)")


def _check_factory_groups(cfg: Config) -> None:
    """model, dataset, fwer, loss, pruning: names, options against the factories, and how they fit."""
    from . import losses as losses_mod
    from .data import DATASETS, dataset_options, pool_size
    from .models import MODELS
    from .stats import BOUNDS, FWERS, get_bound, make_fwer

    cal = cfg.calibration
    _choice("model.name", cfg.model.get("name"), MODELS)
    check_options("model", MODELS[cfg.model["name"]], {k: v for k, v in cfg.model.items() if k != "name"},
                  what=f"model {cfg.model['name']!r}")
    _choice("dataset.name", cfg.dataset.get("name"), DATASETS)
    entry = DATASETS[cfg.dataset["name"]]
    check_options("dataset", entry.load, dataset_options(cfg.dataset), what=f"dataset {cfg.dataset['name']!r}")
    for key, value in dataset_options(cfg.dataset).items():  # a limit of 0 or below trains or certifies nothing
        if key.endswith("_limit") and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                             or value < 1):
            raise ConfigError(f"dataset.{key}", value, "a positive integer, or null (no limit)")
    n_pool = _built("dataset", lambda: pool_size(cfg.dataset))
    if n_pool is not None and cal.n_cal + cal.n_test > n_pool:
        raise ConfigError("calibration.n_cal + calibration.n_test", cal.n_cal + cal.n_test,
                          f"at most the evaluation pool size {n_pool} (dataset {cfg.dataset['name']!r})")
    _choice("bound.name", cfg.bound.name, BOUNDS)
    _choice("fwer.name", cfg.fwer.get("name"), FWERS)
    fwer_options = {k: v for k, v in cfg.fwer.items() if k != "name"}
    check_options("fwer", FWERS[cfg.fwer["name"]], fwer_options, skip=("name",), what=f"fwer {cfg.fwer['name']!r}")
    _built("fwer", lambda: make_fwer(cfg.fwer["name"], **fwer_options))
    _choice("loss.name", cfg.loss.get("name"), losses_mod.LOSSES)
    spec = losses_mod.LOSSES[cfg.loss["name"]]
    loss_options = {k: v for k, v in cfg.loss.items() if k != "name"}
    check_options("loss", spec.build, loss_options, what=f"loss {spec.name!r}")
    _built("loss", lambda: spec.make(**loss_options))
    if get_bound(cfg.bound.name).binary_only and not spec.binary:
        binary = sorted(k for k, v in losses_mod.LOSSES.items() if v.binary)
        raise ConfigError("bound.name", cfg.bound.name,
                          f"hb, hoeffding, bentkus or wsr with the non-binary loss {spec.name!r} "
                          f"(binomial needs a binary loss: {', '.join(binary)})")
    if spec.task != entry.task:
        allowed = sorted(k for k, v in losses_mod.LOSSES.items() if v.task == entry.task)
        raise ConfigError("loss.name", spec.name, f"a {entry.task} loss: {', '.join(allowed)}")
    _check_data_fits(cfg, entry)
    family_specs(cfg)
    _check_risks(cfg, entry.task)
    _check_knobs(cfg)


def _check_data_fits(cfg: Config, entry: Any) -> None:
    """Labels and training data the run needs and the dataset lacks: a labelled loss on an
    unlabelled pool, training (or a data-informed criterion's batch) without training data."""
    from . import losses as losses_mod
    from .data import dataset_options
    from .models import PRETRAINED

    options = dataset_options(cfg.dataset)
    if not _built("dataset", lambda: entry.labelled(**options)):
        names = [cfg.loss["name"], *(r.get("loss") for r in (cfg.calibration.risks or []))]
        labelled = [n for n in names if n in losses_mod.LOSSES and losses_mod.LOSSES[n].labeled]
        if labelled:
            free = sorted(k for k, v in losses_mod.LOSSES.items() if not v.labeled and v.task == entry.task)
            raise ConfigError("loss.name", labelled[0], f"a loss that needs no labels on this unlabelled pool "
                              f"(no y.npy in dataset.path): {', '.join(free)}")
    if entry.trains(**options):
        return
    if cfg.model.get("name") not in PRETRAINED:
        raise ConfigError("dataset.train_path", None, f"a folder of training data (x.npy, y.npy): model "
                          f"{cfg.model.get('name')!r} is trained here; or a pretrained model=checkpoint")
    for i, spec in enumerate(family_specs(cfg)):
        if spec.criterion in ("sipp", "activation"):
            group = "pruning" if cfg.knobs is None else f"knobs.families[{i}]"
            raise ConfigError(f"{group}.criterion", spec.criterion, "a criterion that needs no training batch "
                              "(magnitude, random; l1, l2 for channels), or give dataset.train_path")


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError("sweep.device", device, "cpu, cuda or cuda:<index>")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError("sweep.device", device, "cpu (no CUDA device is available on this machine)")
    if device.startswith("cuda:") and int(device[5:]) >= count:
        raise ConfigError("sweep.device", device, f"cpu or cuda:0 … cuda:{count - 1} ({count} CUDA devices here)")


def _check_model_fits(cfg: Config) -> None:
    """Build the (untrained) model, check the pruning criterion can score its pool, and run it on
    two dummy inputs of the dataset's shape: a model that does not fit the data fails here, not
    after minutes of data loading and training."""
    import torch

    from .data import DATASETS, dataset_options
    from .models import MODELS, CheckpointError
    name = cfg.model["name"]
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    try:
        model = MODELS[name](**options)
    except CheckpointError as err:  # the user's file or class: name the key that is wrong
        raise ConfigError(f"model.{err.key}", err.value, err.allowed) from None
    except (ValueError, TypeError, RuntimeError, IndexError) as err:
        raise ConfigError("model", options, f"options that build model {name!r} (it fails: "
                          f"{str(err).strip().splitlines()[0]})") from None
    empty = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.numel() == 0]
    if empty:
        raise ConfigError("model", options, f"options that give every layer of {name!r} at least one unit "
                          f"({empty[0][0]} has shape {empty[0][1]})")
    specs = family_specs(cfg)
    for i, spec in enumerate(specs):
        group = "pruning" if cfg.knobs is None else f"knobs.families[{i}]"
        if isinstance(model, torch.jit.ScriptModule) and spec.structure != "unstructured":
            raise ConfigError(f"{group}.structure", spec.structure, "unstructured with a TorchScript model (channel "
                              "pruning rebuilds modules from their Python classes: save a state_dict and give "
                              "model.target)")
        spec.check_fits(model, name, group=group)
    entry = DATASETS[cfg.dataset["name"]]
    shape = _built("dataset", lambda: entry.input_shape(**dataset_options(cfg.dataset)))
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError("model.name", name, f"a model that takes {cfg.dataset['name']} inputs of shape "
                          f"{tuple(shape)} (it fails on them: {first})") from None
    want = entry.output_shape(**dataset_options(cfg.dataset))
    if not isinstance(out, torch.Tensor) or (want is not None and tuple(out.shape[1:]) != tuple(want)):
        got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError("model.name", name, f"a model whose outputs on {cfg.dataset['name']} have the shape "
                          f"{tuple(want)} per sample (this one gives {got})")


# What a run imports beyond the core install, by the config key that asks for it: the module, the
# extra that installs it, and the value that needs none.
_EXTRAS = {
    "figures": ("matplotlib", "pipeline", "false"),
    "logger.name": ("wandb", "tracking", "none"),
    "dataset.name": ("albumentations", "segmentation", "mnist or fashion_mnist"),
    "pruning.structure": ("torch_pruning", "channel", "unstructured"),
}
_SEGMENTATION_DATASETS = ("polypgen",)


def _check_extras(cfg: Config) -> None:
    """A missing optional dependency is one message naming the extra, before any directory is made
    (it used to be a ModuleNotFoundError traceback after the output folder existed)."""
    import importlib.util

    from .pruning import requires_module

    needs = {requires_module(cfg.pruning), *(requires_module(f) for f in (cfg.knobs.families if cfg.knobs else [])
                                             if isinstance(f, Mapping))}
    asked = {
        "figures": bool(cfg.figures),
        "logger.name": cfg.logger.name == "wandb" and cfg.logger.mode != "disabled",
        "dataset.name": cfg.dataset.get("name") in _SEGMENTATION_DATASETS,
        "pruning.structure": "torch_pruning" in needs,
    }
    for key, needed in asked.items():
        module, extra, instead = _EXTRAS[key]
        if needed and importlib.util.find_spec(module) is None:
            value = {"figures": cfg.figures, "logger.name": cfg.logger.name, "dataset.name": cfg.dataset.get("name"),
                     "pruning.structure": "channel"}[key]
            raise ConfigError(key, value, f"{instead}, or install the {extra} extra (no module {module!r} here): "
                              f"pip install \"confprune[{extra}]\"")


def _wandb_key() -> bool:
    """Whether W&B finds an API key here (the environment or a netrc entry), without importing wandb."""
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _check_training_and_sweep(cfg: Config) -> None:
    _choice("logger.name", cfg.logger.name, ["none", "wandb"])
    _choice("logger.mode", cfg.logger.mode, ["offline", "online", "disabled"])
    _choice("trainer.optimizer", cfg.trainer.optimizer, ["adam", "sgd"])
    _choice("trainer.scheduler", cfg.trainer.scheduler, ["none", "cosine"])
    traj = cfg.trainer.trajectory
    _choice("trainer.trajectory.granularity", traj.granularity, ["step", "epoch"])
    if traj.enabled and not 1 <= traj.last_k_epochs <= cfg.trainer.epochs:
        raise ConfigError("trainer.trajectory.last_k_epochs", traj.last_k_epochs, f"an integer in [1, trainer.epochs={cfg.trainer.epochs}]")
    from .models import PRETRAINED

    for i, spec in enumerate(family_specs(cfg)):
        group = "pruning" if cfg.knobs is None else f"knobs.families[{i}]"
        if cfg.model.get("name") in PRETRAINED and spec.criterion == "mu":
            raise ConfigError(f"{group}.criterion", "mu", "a criterion that needs no training trajectory (magnitude, "
                              "sipp, random; l1, l2, activation for channels): a pretrained model was not trained here")
        spec.check_training(traj, group=group)
    wd = cfg.trainer.weight_decay
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not (math.isfinite(wd) and wd >= 0):
        raise ConfigError("trainer.weight_decay", wd, "a finite number ≥ 0")
    if cfg.logger.name == "wandb" and cfg.logger.mode == "online" and not _wandb_key():
        raise ConfigError("logger.mode", "online", "offline or disabled (no W&B API key here: set WANDB_API_KEY or "
                          "run `wandb login`; offline runs can be synced later)")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        value = getattr(cfg.trainer, key)
        if not isinstance(value, int) or value < (0 if key == "epochs" else 1):
            raise ConfigError(f"trainer.{key}", value, "a positive integer")
    if not cfg.trainer.lr > 0:
        raise ConfigError("trainer.lr", cfg.trainer.lr, "a positive number")
    if cfg.sweep.batch_size < 1:
        raise ConfigError("sweep.batch_size", cfg.sweep.batch_size, "an integer ≥ 1")
    tt = cfg.trainer.num_threads
    if tt is not None and (isinstance(tt, bool) or not isinstance(tt, int) or tt < 1):
        raise ConfigError("trainer.num_threads", tt, "a positive integer, or null (torch's default)")
    formats = list(cfg.figure_formats)
    if not formats or any(f not in FIGURE_FORMATS for f in formats) or len(set(formats)) != len(formats):
        raise ConfigError("figure_formats", formats, f"a non-empty list of distinct formats from {list(FIGURE_FORMATS)}")
    threads = cfg.sweep.num_threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError("sweep.num_threads", threads, "a positive integer, or null (torch's default)")
    _check_device(cfg.sweep.device)
    if cfg.cost.latency_points < 0 or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                          for b in cfg.cost.latency_batches):
        raise ConfigError("cost", {"latency_points": cfg.cost.latency_points, "latency_batches": cfg.cost.latency_batches},
                          "latency_points ≥ 0 and latency_batches a list of integers ≥ 1")
    if cfg.sweep.early_stop and cfg.fwer["name"] != "fixed_sequence":
        raise ConfigError("sweep.early_stop", True,
                          f"false with fwer={cfg.fwer['name']!r} (early stopping is exact only for fixed_sequence)")
