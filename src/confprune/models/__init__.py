"""Model registry: ``build_model(cfg)`` turns a model config (``name`` + arguments) into a module."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .checkpoint import CheckpointError, load_checkpoint_model
from .crepe import Crepe, pretrained_crepe
from .mnist import MnistCNN, MnistMLP
from .unet import UNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mnist_cnn": MnistCNN,
    "mnist_mlp": MnistMLP,
    "unet": UNet,
    "checkpoint": load_checkpoint_model,
    "crepe": pretrained_crepe,
}
#: models that come trained (the trainer is skipped; the weights file is the model's identity)
PRETRAINED = frozenset({"checkpoint", "crepe"})


def weights_file(cfg: Mapping[str, Any]) -> str:
    """The file a pretrained model's weights are read from (its SHA-256 is the model's identity)."""
    if cfg["name"] == "crepe":
        from .crepe import crepe_weights

        return str(crepe_weights(cfg.get("capacity", "tiny"), cfg.get("data_dir", "data"), cfg.get("download", True)))
    return str(cfg["path"])


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    kwargs = {k: v for k, v in dict(cfg).items() if k != "name"}
    try:
        factory = MODELS[cfg["name"]]
    except KeyError:
        raise ValueError(f"unknown model.name={cfg.get('name')!r}; allowed: {', '.join(MODELS)}") from None
    try:
        return factory(**kwargs)
    except CheckpointError:
        raise
    except TypeError as err:
        raise ValueError(f"model {cfg['name']!r} does not accept these arguments {kwargs}: {err}") from None


__all__ = ["MODELS", "PRETRAINED", "CheckpointError", "Crepe", "pretrained_crepe", "weights_file", "MnistCNN", "MnistMLP", "UNet", "build_model",
           "load_checkpoint_model"]
