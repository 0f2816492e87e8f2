"""A pretrained model nobody here trained (``model=checkpoint``): your file, loaded, never trained.

Two forms, both loaded without unpickling arbitrary objects:

- a **state_dict** (``torch.save(model.state_dict(), path)``, or a dict holding it under
  ``state_dict``) with ``target: "package.module:Class"`` and ``kwargs`` to build the module:
  loaded with ``torch.load(weights_only=True)`` and ``load_state_dict(strict=True)``;
- a **TorchScript** file (``torch.jit.save``), with ``target`` left null. TorchScript code runs
  as saved; only the unstructured families prune it (the channel family rebuilds modules from
  Python classes: use the state_dict form).

The file's SHA-256 is the model's identity: it is recorded in the certificate (with the weights'
checksum) and, when ``sha256`` is given, checked before anything else.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import OptionError
from ..integrity import file_sha256


class CheckpointError(OptionError):
    """A checkpoint that cannot be used: the option (``path``, ``target``, ``kwargs``, ``sha256``;
    the config check names it ``model.<key>``), the value and what is allowed."""


def resolve_target(target: str) -> type:
    """``"package.module:Class"`` → the class (imported, never evaluated as code)."""
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise CheckpointError("target", target, "'package.module:Class' (an importable class), or null for a "
                              "TorchScript file")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module not importing
        raise CheckpointError("target", target, f"an importable module ({type(err).__name__}: {err})") from None
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise CheckpointError("target", target, f"a class that exists in {module_name}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError("target", target, "a torch.nn.Module subclass")
    return cls


def _state_dict(blob: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(blob, Mapping) and "state_dict" in blob and isinstance(blob["state_dict"], Mapping):
        blob = blob["state_dict"]
    if not isinstance(blob, Mapping) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError("path", path, "a state_dict (name → tensor), or a dict holding one under "
                              "'state_dict', or a TorchScript file with model.target=null")
    return dict(blob)


def load_checkpoint_model(path: str, target: str | None = None, kwargs: Mapping[str, Any] | None = None,
                          sha256: str | None = None) -> nn.Module:
    """The pretrained module of ``model=checkpoint`` (see the module docstring), in eval mode."""
    if not isinstance(path, str) or not path:
        raise CheckpointError("path", path, "the path of your checkpoint file")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError("path", path, "an existing file (state_dict or TorchScript)")
    if sha256 is not None and file_sha256(p) != sha256:
        raise CheckpointError("sha256", sha256, f"the SHA-256 of {path} ({file_sha256(p)})")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise CheckpointError("kwargs", kwargs, "a mapping of the class's keyword arguments")
    if target is None:
        try:
            module = torch.jit.load(str(p), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - not a TorchScript archive
            raise CheckpointError("path", path, "a TorchScript file when model.target is null (a state_dict "
                                  f"needs model.target='module:Class'); torch says: {str(err).splitlines()[0][:120]}") from None
        return module.eval()
    cls = resolve_target(target)
    try:
        module = cls(**dict(kwargs or {}))
    except Exception as err:  # noqa: BLE001 - the class refused its arguments
        raise CheckpointError("kwargs", dict(kwargs or {}), f"arguments {target} accepts "
                              f"({type(err).__name__}: {err})") from None
    try:
        blob = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - not a plain tensor file: never unpickled further
        raise CheckpointError("path", path, "a file torch.load(weights_only=True) reads (a state_dict); "
                              f"torch says: {str(err).splitlines()[0]}") from None
    try:
        module.load_state_dict(_state_dict(blob, path), strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split()).replace(f"Error(s) in loading state_dict for {cls.__name__}: ", "")
        raise CheckpointError("path", path, f"weights that fit {target}({dict(kwargs or {})}): {detail[:300]}") from None
    return module.eval()


__all__ = ["CheckpointError", "file_sha256", "load_checkpoint_model", "resolve_target"]  # file_sha256: from integrity
