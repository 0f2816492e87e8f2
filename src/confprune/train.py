"""Train or load the dense model, cached by a hash of everything that determines it.

Checkpoints live in ``<cache_dir>/models/<model>-<hash>.pt`` and hold the state_dict plus plain
metadata; they are written atomically (temp file + rename), loaded with
``torch.load(weights_only=True)``, and checked against the expected key and architecture. A
corrupt or mismatched entry is reported and retrained, never trusted. Concurrent jobs wait on a
file lock instead of training the same model twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .cache import cached
from .data import TaskData
from .forward import LAYOUT_VERSION
from .integrity import content_key, state_dict_checksum
from .models import PRETRAINED, build_model
from .pruning.trajectory import WelfordTracker

log = logging.getLogger(__name__)

# ``on_step(step, metrics)``: called after every optimizer step of a training that actually runs
# (never for a checkpoint loaded from the cache); ``step`` counts optimizer steps from 1.
StepCallback = Callable[[int, dict[str, float]], None]

# Keys that do not change the trained weights (where data lives, how the pool is cut).
_DATASET_KEYS_IGNORED = {"data_dir", "download", "download_timeout", "pool_limit", "root_cache"}
_TRAINER_KEYS_IGNORED = {"eval_batch_size"}


#: The training thread count of every committed model (``trainer.num_threads``' default).
TRAINING_THREADS = 2


def _plain(cfg: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)  # type: ignore[arg-type]
    return dict(cfg)


def cache_key(model_cfg: Mapping[str, Any], dataset_cfg: Mapping[str, Any], trainer_cfg: Any, seed: int) -> str:
    """Hash of the model, dataset, trainer and seed that determine the trained weights (and, when
    trajectory tracking is on, the tracking settings: such a checkpoint also holds the statistics)."""
    trainer = {k: v for k, v in _plain(trainer_cfg).items() if k not in _TRAINER_KEYS_IGNORED}
    threads = trainer.pop("num_threads", TRAINING_THREADS)
    if threads is None:  # torch's default: the machine's count, which changes the weights
        threads = torch.get_num_threads()
    if threads != TRAINING_THREADS:  # the default keeps the keys of the models trained before the option
        trainer["num_threads"] = int(threads)
    if not (trainer.get("trajectory") or {}).get("enabled"):
        trainer.pop("trajectory", None)
    elif not trainer["trajectory"].get("track_updates"):
        # Off (the default) keeps the keys of checkpoints cached before the option existed.
        trainer["trajectory"] = {k: v for k, v in trainer["trajectory"].items() if k != "track_updates"}
    return content_key(
        {
            "kind": "model",
            "model": _plain(model_cfg),
            "dataset": {k: v for k, v in _plain(dataset_cfg).items() if k not in _DATASET_KEYS_IGNORED},
            "trainer": trainer,
            "seed": int(seed),
        }
    )


class TrainingDiverged(ValueError):
    """Training produced a non-finite loss or weights; such a model is never cached or certified."""


def cross_entropy_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def bce_dice_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice loss (segmentation)."""
    logits = model(x)
    prob = torch.sigmoid(logits).flatten(1)
    target = y.flatten(1)
    dice = (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return F.binary_cross_entropy_with_logits(logits, y) + (1 - dice).mean()


OBJECTIVES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "classification": cross_entropy_objective,
    "segmentation": bce_dice_objective,
}


def _classification_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    return {"accuracy": float((outputs.argmax(1) == targets).double().mean())}


def _segmentation_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean per-image Dice and IoU of the predicted mask (logit > 0) vs the ground truth."""
    pred, gt = (outputs > 0).flatten(1), (targets > 0.5).flatten(1)
    inter, total = (pred & gt).sum(1).double(), (pred.sum(1) + gt.sum(1)).double()
    union = (pred | gt).sum(1).double()
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return {"dice": float(dice.mean()), "iou": float(iou.mean())}


def _pitch_metrics(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Raw pitch accuracy: the fraction of voiced frames (label not NaN) within 50 cents."""
    from .models.crepe import decode_cents

    y = targets.double()
    voiced = ~torch.isnan(y)
    if not bool(voiced.any()):
        return {}
    return {"raw_pitch_accuracy": float(((decode_cents(outputs)[voiced] - y[voiced]).abs() <= 50).double().mean())}


METRICS = {"classification": _classification_metrics, "segmentation": _segmentation_metrics, "pitch": _pitch_metrics}


@torch.inference_mode()
def dense_metrics(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, task: str, batch_size: int = 2000) -> dict[str, float]:
    """Dense model quality on a data set (accuracy; Dice and IoU for segmentation)."""
    from .forward import forward_batched  # the sweep's forward path: channels_last, small batches

    return METRICS[task](torch.cat(forward_batched(model, inputs, batch_size=min(batch_size, 500))), targets)


def cached_dense_metrics(
    model: nn.Module, model_checksum: str, data: TaskData, cache_dir: str | Path, device: str = "cpu", batch_size: int = 2000
) -> tuple[dict[str, float], bool]:
    """:func:`dense_metrics` on the pool, cached under (the weights' checksum, pool fingerprint,
    task, device type) like the loss tables: a sweep over α, δ, bound or FWER runs the dense model
    once, and a model retrained to other weights never reuses another model's entry.
    Returns (metrics, from_cache); an unreadable entry is recomputed."""
    key = content_key(
        {"kind": "dense_metrics", "layout": LAYOUT_VERSION, "model_checksum": model_checksum, "pool": data.pool_fingerprint(), "task": data.task,
         "device": torch.device(device).type}
    )

    def load(path: Path) -> dict[str, float]:
        entry = json.loads(path.read_text())
        if entry.get("key") != key:
            raise ValueError(f"cache key mismatch: file says {entry.get('key')!r}, expected {key!r}")
        return {k: float(v) for k, v in entry["metrics"].items()}

    return cached(
        Path(cache_dir) / "dense_metrics" / f"{key}.json", load,
        lambda: dense_metrics(model, data.pool_inputs.to(device), data.pool_targets.to(device), data.task, batch_size),
        lambda metrics, tmp: Path(tmp).write_text(json.dumps({"key": key, "metrics": metrics})),
        "dense-metrics",
    )


def train_model(
    model: nn.Module, data: TaskData, trainer: Any, seed: int, progress: bool = True,
    on_step: StepCallback | None = None,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Train in place; deterministic for a given seed on CPU.

    Returns (stats, trajectory): the trajectory statistics (Welford mean/M2 of every parameter
    over the last K epochs, for M&U) when ``trainer.trajectory.enabled``, else an empty dict.

    ``on_step(step, metrics)``, when given, is called after every optimizer step with ``step``
    counting from 1 and ``metrics``: ``loss`` (the training objective on the batch), the task's
    batch metrics of :data:`METRICS` on the outputs the step computed (``accuracy``; ``dice`` and
    ``iou`` for segmentation), ``epoch`` (fractional, in epochs done) and ``lr``. It only reads:
    the weights, the random streams and the result are the same with or without it.
    """
    t = _plain(trainer)
    threads = t.get("num_threads", TRAINING_THREADS)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _train(model, data, t, seed, progress, on_step)
    finally:
        torch.set_num_threads(before)


def _train(model: nn.Module, data: TaskData, t: dict[str, Any], seed: int, progress: bool,
           on_step: StepCallback | None) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    traj_cfg = t.get("trajectory") or {}
    tracker = (WelfordTracker(model, track_updates=bool(traj_cfg.get("track_updates", False)))
               if traj_cfg.get("enabled") else None)
    first_tracked_epoch = t["epochs"] - int(traj_cfg.get("last_k_epochs", 1))
    per_step = traj_cfg.get("granularity", "step") == "step"
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    objective = OBJECTIVES[data.task]
    n = data.train_inputs.shape[0]
    bs = t["batch_size"]
    steps_per_epoch = (n + bs - 1) // bs
    opt, scheduler = _optimizer(model, t, t["epochs"] * steps_per_epoch)
    # The batch outputs come from a forward hook on the objective's own pass: the metrics cost no
    # second forward pass (which would also move BatchNorm statistics and dropout's random stream).
    outputs: list[torch.Tensor] = []

    def keep_outputs(_module: nn.Module, _inputs: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            outputs.append(out.detach())

    hook = model.register_forward_hook(keep_outputs) if on_step is not None else None
    step = 0
    last = float("nan")
    try:
        for epoch in range(t["epochs"]):
            model.train()
            perm = torch.randperm(n, generator=gen)
            bar = tqdm(range(0, n, bs), desc=f"train epoch {epoch + 1}/{t['epochs']}", disable=not progress,
                       leave=False)
            for start in bar:
                idx = perm[start : start + bs]
                x, y = data.train_inputs[idx], data.train_targets[idx]
                if data.augment is not None:
                    x, y = data.augment(x, y, int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                outputs.clear()
                loss = objective(model, x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if scheduler is not None:
                    scheduler.step()
                if tracker is not None and per_step and epoch >= first_tracked_epoch:
                    tracker.update()
                last = loss.item()
                step += 1
                if on_step is not None:  # before the divergence check: a dashboard shows the loss that blew up
                    on_step(step, _step_metrics(data.task, last, outputs, y, step / steps_per_epoch,
                                                opt.param_groups[0]["lr"]))
                if not math.isfinite(last):
                    raise TrainingDiverged(
                        f"training diverged: the loss is {last} at epoch {epoch + 1}, step {start // bs + 1}; nothing "
                        f"is cached. Lower trainer.lr (now {t['lr']}) or check the data"
                    )
                bar.set_postfix(loss=f"{last:.4f}", refresh=False)
            if tracker is not None and not per_step and epoch >= first_tracked_epoch:
                tracker.update()
    finally:
        if hook is not None:
            hook.remove()
    model.eval()
    return {"final_train_loss": last}, (tracker.state() if tracker is not None else {})


def _optimizer(model: nn.Module, t: dict[str, Any], steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The trainer's optimizer over the trainable parameters and its learning-rate schedule (None:
    constant); neither draws random numbers."""
    params = [p for p in model.parameters() if p.requires_grad]
    if t["optimizer"] == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=t["lr"], weight_decay=t["weight_decay"])
    else:
        opt = torch.optim.SGD(params, lr=t["lr"], momentum=0.9, weight_decay=t["weight_decay"])
    cosine = t.get("scheduler", "none") == "cosine"
    return opt, (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps)) if cosine else None)


def _step_metrics(task: str, loss: float, outputs: list[torch.Tensor], targets: torch.Tensor, epoch: float,
                  lr: float) -> dict[str, float]:
    """What ``on_step`` receives: the batch loss, the task's metrics on the outputs of the step's
    own forward pass (the last one, if an objective ran the model more than once), epoch and lr."""
    metrics = METRICS[task](outputs[-1], targets) if outputs else {}
    return {"loss": loss, **metrics, "epoch": epoch, "lr": float(lr)}


@dataclass
class TrainedModel:
    model: nn.Module
    key: str
    path: Path
    from_cache: bool
    train_seconds: float
    meta: dict[str, Any] = field(default_factory=dict)
    trajectory: dict[str, torch.Tensor] = field(default_factory=dict)


def _load_checkpoint(path: Path, model: nn.Module, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "meta" not in ckpt:
        raise ValueError("not a confprune checkpoint")
    if ckpt["meta"].get("key") != key:
        raise ValueError(f"cache key mismatch: file says {ckpt['meta'].get('key')!r}, expected {key!r}")
    model.load_state_dict(ckpt["state_dict"], strict=True)
    if state_dict_checksum(model.state_dict()) != ckpt["meta"].get("checksum"):
        raise ValueError("weights checksum mismatch")
    return dict(ckpt["meta"]), dict(ckpt.get("trajectory", {}))


def pretrained(model_cfg: Mapping[str, Any]) -> TrainedModel:
    """A model that comes trained (``model=checkpoint``): loaded from the user's file, never
    trained or copied into the cache; its key is the file's SHA-256 (first 16 hex digits)."""
    from .models import weights_file
    from .models.checkpoint import file_sha256

    model = build_model(model_cfg).eval()
    path = weights_file(model_cfg)
    digest = file_sha256(path)
    meta = {"key": digest[:16], "model": model_cfg["name"], "file_sha256": digest,
            "checksum": state_dict_checksum(model.state_dict())}
    log.info("loaded pretrained model %s (sha256 %s…); not trained", path, digest[:12])
    return TrainedModel(model, digest[:16], Path(path).resolve(), True, 0.0, meta, {})


def train_or_load(
    model_cfg: Mapping[str, Any],
    dataset_cfg: Mapping[str, Any],
    trainer_cfg: Any,
    seed: int,
    data: TaskData,
    cache_dir: str | Path,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> TrainedModel:
    """The trained model for this (model, dataset, trainer, seed): loaded from the cache, or trained
    and cached. ``on_step`` (see :func:`train_model`) is called only when the model is actually
    trained here, never for a cached checkpoint; it does not enter the cache key."""
    if model_cfg["name"] in PRETRAINED:
        return pretrained(model_cfg)
    key = cache_key(model_cfg, dataset_cfg, trainer_cfg, seed)
    path = Path(cache_dir) / "models" / f"{model_cfg['name']}-{key}.pt"

    def fresh_model() -> nn.Module:
        torch.manual_seed(seed)  # the same initial weights whether the entry loads or not
        return build_model(model_cfg)

    def load(path: Path) -> TrainedModel:
        model = fresh_model()
        meta, trajectory = _load_checkpoint(path, model, key)
        model.eval()
        log.info("loaded cached model %s", path)
        return TrainedModel(model, key, path, True, 0.0, meta, trajectory)

    def train() -> TrainedModel:
        model = fresh_model()
        start = time.perf_counter()
        stats, trajectory = train_model(model, data, trainer_cfg, seed, progress, on_step=on_step)
        seconds = time.perf_counter() - start
        broken = [n for n, p in model.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        if broken:
            raise TrainingDiverged(
                f"training {model_cfg['name']} left non-finite weights in {broken[:3]}; nothing was cached. "
                f"Lower trainer.lr (now {_plain(trainer_cfg)['lr']})"
            )
        meta = {
            "key": key,
            "model": model_cfg["name"],
            "seed": int(seed),
            "train_seconds": seconds,
            "checksum": state_dict_checksum(model.state_dict()),
            **stats,
        }
        log.info("trained %s in %.1fs; caching at %s", model_cfg["name"], seconds, path)
        return TrainedModel(model, key, path, False, seconds, meta, trajectory)

    def save(trained: TrainedModel, tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file handle: the archive's inner name does not depend on the temp name
            torch.save({"state_dict": trained.model.state_dict(), "meta": trained.meta,
                        "trajectory": trained.trajectory}, fh)

    return cached(path, load, train, save, "model", redo="retraining")[0]
